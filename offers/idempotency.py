"""Stored till answers: a request retried with the same ``Idempotency-Key`` gets the first
answer again (same status and body); the same key with another request is refused."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from offers.domain import IdempotencyKeyReused
from offers.models import TillAnswer

Answer = tuple[int, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class TillResult:
    status: int
    body: dict[str, Any]
    replayed: bool


def fingerprint(operation: str, request: dict[str, Any]) -> str:
    canonical = json.dumps({"op": operation, "request": request}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotentTill:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def purge(self, before: datetime) -> int:
        """Forget answers stored before ``before`` (a till retries within minutes, not days)."""
        with transaction(self.sessions) as session:
            result = session.execute(delete(TillAnswer).where(TillAnswer.created_at < before))
        return int(result.rowcount)  # type: ignore[attr-defined]

    def _stored(self, terminal: str, key: str, print_: str) -> TillResult | None:
        with transaction(self.sessions) as session:
            row = session.get(TillAnswer, (terminal, key))
            if row is None:
                return None
            if row.fingerprint != print_:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was already used for a different request; "
                    "use a new key for a new request"
                )
            return TillResult(row.status_code, dict(row.body), True)

    def run(
        self,
        *,
        terminal: str,
        key: str | None,
        print_: str,
        action: Callable[[Session], Answer],
        now: datetime,
    ) -> TillResult:
        """Run ``action`` in one transaction and store its answer under ``key`` in the same one.
        Two copies of one request at the same moment: the second's transaction fails on the
        key's primary key, is rolled back whole, and it answers with the first one's answer."""
        if key is None:
            with transaction(self.sessions) as session:
                status, body = action(session)
            return TillResult(status, body, False)
        stored = self._stored(terminal, key, print_)
        if stored is not None:
            return stored
        try:
            with transaction(self.sessions) as session:
                status, body = action(session)
                session.add(
                    TillAnswer(
                        terminal=terminal,
                        idempotency_key=key,
                        fingerprint=print_,
                        status_code=status,
                        body=body,
                        created_at=now,
                    )
                )
        except IntegrityError:
            stored = self._stored(terminal, key, print_)
            if stored is None:
                raise
            return stored
        return TillResult(status, body, False)
