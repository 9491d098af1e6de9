"""The consent gate: every check goes through here, default deny, fail closed.

The projection is cached per subject in the hot-state store (shared by every API process). A
write bumps the subject's generation after it commits; a cached value is used only while its
generation is current, so a withdrawal takes effect on the very next check in every process.
The projection also holds the token generation of each of the subject's devices: the ping path
reads it with the consent instead of querying the device (a token rotation or an erasure bumps
the subject's generation too; a device missing from the projection is read from the database).
When the cache cannot be reached, ``HotStateUnavailable`` propagates: the caller answers 503 and
processes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from consent.domain import NO_CHANNEL, Channel, ConsentDecision, ConsentView, Purpose, decide
from consent.models import ConsentReceipt, ConsentState, Device
from core.db import on_commit
from core.state import HotState

CACHE_TTL_S = 300


# Both keys carry the subject as a hash tag: they are read together (one MGET), so on Redis
# Cluster they must live in one slot.
def _cache_key(subject_id: str) -> str:
    return f"consent:{{{subject_id}}}"


def _generation_key(subject_id: str) -> str:
    return f"consent-gen:{{{subject_id}}}"


def cache_pairs(subject_ids: Iterable[str]) -> list[tuple[str, str]]:
    """The (cached projection, generation counter) keys of these subjects."""
    return [(_cache_key(s), _generation_key(s)) for s in subject_ids]


class ConsentGate:
    def __init__(self, session: Session, state: HotState) -> None:
        self.session = session
        self.state = state
        self._views: dict[str, dict[tuple[str, str], ConsentView]] = {}
        self._devices: dict[str, dict[str, int]] = {}  # subject -> device -> token generation

    def views(self, subject_id: str) -> dict[tuple[str, str], ConsentView]:
        """(purpose, channel) -> current view, from the cache when it is current."""
        if subject_id not in self._views:
            self.prefetch([subject_id])
        return self._views[subject_id]

    def prefetch(self, subject_ids: Iterable[str]) -> None:
        """Read the views of many subjects: the cache in one round trip, then what it did not
        hold (or held for an older generation) in one query, written back to the cache."""
        wanted = self._wanted(subject_ids)
        if wanted:
            self.absorb(wanted, self.state.get_versioned(cache_pairs(wanted)))

    def _wanted(self, subject_ids: Iterable[str]) -> list[str]:
        """These subjects, once each, less those already read."""
        return list(dict.fromkeys(s for s in subject_ids if s not in self._views))

    def absorb(self, wanted: Sequence[str], cached: Sequence[tuple[str | None, int]]) -> None:
        """Take the cache's answers (``HotState.get_versioned`` of ``cache_pairs(wanted)``, read
        by the caller, perhaps with other reads in one round trip); load the rest."""
        missing: dict[str, int] = {}
        for subject_id, (value, generation) in zip(wanted, cached, strict=True):
            payload = json.loads(value) if value is not None else None
            if payload is not None and payload.get("g") == generation:
                self._views[subject_id] = {(r[0], r[1]): _view(r[2:]) for r in payload["rows"]}
                self._devices[subject_id] = payload.get("d", {})
            else:
                missing[subject_id] = generation
        if missing:
            self._load(missing)

    def _load(self, missing: dict[str, int]) -> None:
        loaded: dict[str, dict[tuple[str, str], ConsentView]] = {s: {} for s in missing}
        rows = self.session.scalars(
            select(ConsentState).where(ConsentState.subject_id.in_(list(missing)))
        )
        for r in rows:
            loaded[r.subject_id][(r.purpose, r.channel)] = ConsentView(
                r.state, r.event_id, r.event_hash, r.valid_until
            )
        devices: dict[str, dict[str, int]] = {s: {} for s in missing}
        for device_id, subject_id, version in self.session.execute(
            select(Device.id, Device.subject_id, Device.token_version).where(
                Device.subject_id.in_(list(missing))
            )
        ):
            devices[subject_id][device_id] = version
        for subject_id, views in loaded.items():
            payload = {
                "g": missing[subject_id],
                "rows": [
                    [
                        p,
                        c,
                        v.state,
                        v.event_id,
                        v.event_hash,
                        v.valid_until.isoformat() if v.valid_until else None,
                    ]
                    for (p, c), v in views.items()
                ],
                "d": devices[subject_id],
            }
            self.state.set(_cache_key(subject_id), json.dumps(payload), CACHE_TTL_S)
            self._views[subject_id] = views
            self._devices[subject_id] = devices[subject_id]

    def token_version(self, subject_id: str, device_id: str) -> int | None:
        """The current token generation of the subject's device, as read with its consent views
        (``None``: not read, or no such device of the subject when they were). A device's token
        generation changes only with ``invalidate_after_commit`` of its subject (rotation,
        erasure), so a value read here is as current as the consent beside it."""
        return self._devices.get(subject_id, {}).get(device_id)

    def check(
        self, subject_id: str, purpose: Purpose, channel: Channel | None, now: datetime
    ) -> ConsentDecision:
        channel_value = channel.value if channel else NO_CHANNEL
        view = self.views(subject_id).get((purpose.value, channel_value))
        return decide(purpose.value, channel_value, view, now)

    def check_any_channel(
        self, subject_id: str, purpose: Purpose, now: datetime
    ) -> ConsentDecision:
        """Allowed when the purpose is granted on at least one channel (e.g. offers by email)."""
        denied: ConsentDecision | None = None
        for (p, channel), view in sorted(self.views(subject_id).items()):
            if p != purpose.value:
                continue
            decision = decide(p, channel, view, now)
            if decision.allowed:
                return decision
            denied = denied or decision
        return denied or decide(purpose.value, NO_CHANNEL, None, now)

    def receipt(
        self,
        subject_id: str,
        action: str,
        decision: ConsentDecision,
        now: datetime,
        ref: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> ConsentReceipt:
        receipt = ConsentReceipt(**_receipt_row(subject_id, action, decision, now, ref, details))
        self.session.add(receipt)
        return receipt

    def add_receipts(
        self,
        action: str,
        decided: Sequence[tuple[str, ConsentDecision, dict[str, Any]]],
        now: datetime,
    ) -> None:
        """Store many receipts of one action, (subject, decision, details) each, in one
        statement and without ORM objects (the ping path: one per request)."""
        if decided:  # on the connection: a Core insert, no ORM bulk-insert bookkeeping
            self.session.connection().execute(
                insert(ConsentReceipt), receipt_rows(action, decided, now)
            )

    def invalidate_after_commit(self, subject_id: str) -> None:
        """Called by every ledger write: the next check anywhere reads the new state.

        The generation is bumped once now, inside the writer's transaction, and again after the
        commit. The first bump makes a write fail (503, nothing recorded) while the hot-state
        store is unreachable: a change committed then could not reach the cache, and the cached
        consent would outlive it once the store is back. The second bump drops anything cached
        from the old state by a reader between the first bump and the commit."""
        self._views.pop(subject_id, None)
        self._devices.pop(subject_id, None)
        self.invalidate_now(subject_id)
        on_commit(self.session, lambda: self.invalidate_now(subject_id))

    def invalidate_now(self, subject_id: str) -> None:
        self.state.incr(_generation_key(subject_id), ttl_s=30 * 86400)
        self.state.delete(_cache_key(subject_id))


def _view(row: list[Any]) -> ConsentView:
    state, event_id, event_hash, valid_until = row
    return ConsentView(
        state,
        int(event_id),
        str(event_hash),
        datetime.fromisoformat(valid_until) if valid_until else None,
    )


def _receipt_row(
    subject_id: str,
    action: str,
    decision: ConsentDecision,
    now: datetime,
    ref: str | None,
    details: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "subject_id": subject_id,
        "action": action,
        "subject_ref": ref,
        "purpose": decision.purpose,
        "channel": decision.channel,
        "allowed": decision.allowed,
        "event_id": decision.event_id,
        "event_hash": decision.event_hash,
        "reason": decision.reason[:300],
        "decided_at": now,
        "details": details or {},
    }


RECEIPT_COLUMNS = (
    "subject_id",
    "action",
    "subject_ref",
    "purpose",
    "channel",
    "allowed",
    "event_id",
    "event_hash",
    "reason",
    "decided_at",
    "details",
)


def receipt_rows(
    action: str, decided: Sequence[tuple[str, ConsentDecision, dict[str, Any]]], now: datetime
) -> list[dict[str, Any]]:
    """The ``consent_receipts`` rows (``RECEIPT_COLUMNS``) of ``add_receipts``."""
    return [_receipt_row(s, action, d, now, None, details) for s, d, details in decided]
