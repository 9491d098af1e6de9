"""The consent ledger: append-only, hash-chained, with a projection and signed checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consent.crypto import CheckpointSigner, EvidenceSealer, checkpoint_message
from consent.domain import (
    GENESIS_HASH,
    GRANTING_STATES,
    NO_CHANNEL,
    Channel,
    CollectionMethod,
    ConsentStatus,
    Purpose,
    chain_hash,
)
from consent.models import (
    ConsentCheckpoint,
    ConsentEvent,
    ConsentState,
    LedgerHead,
    Notice,
    SubjectKey,
)
from core.errors import InvalidInput


class UnknownNotice(InvalidInput):
    code = "unknown_notice"


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    sealer: EvidenceSealer
    signer: CheckpointSigner
    max_age: timedelta = timedelta(days=365)
    checkpoint_every: int = 1000


def event_fields(event: ConsentEvent) -> dict[str, Any]:
    """Exactly what the chain hash covers (the sealed evidence, not the plain text)."""
    return {
        "id": event.id,
        "subject_id": event.subject_id,
        "purpose": event.purpose,
        "channel": event.channel,
        "state": event.state,
        "notice_id": event.notice_id,
        "notice_version": event.notice_version,
        "method": event.method,
        "evidence_sealed": event.evidence_sealed,
        "occurred_at": event.occurred_at,
        "valid_until": event.valid_until,
        "recorded_at": event.recorded_at,
    }


class ConsentLedger:
    def __init__(self, session: Session, config: LedgerConfig) -> None:
        self.session = session
        self.config = config

    def notice(self, purpose: Purpose, version: str) -> Notice:
        notice = self.session.scalar(
            select(Notice)
            .where(Notice.purpose == purpose.value, Notice.version == version)
            .order_by(Notice.published_at)
            .limit(1)
        )
        if notice is None:
            raise UnknownNotice(
                f"no published notice '{version}' for purpose {purpose.value}; publish it first"
            )
        return notice

    def record(
        self,
        *,
        subject_id: str,
        purpose: Purpose,
        channel: Channel | None,
        status: ConsentStatus,
        notice_version: str,
        method: CollectionMethod,
        evidence: dict[str, Any],
        occurred_at: datetime,
        now: datetime,
    ) -> ConsentEvent:
        # The hash covers these instants as text: always UTC, whatever offset a caller used.
        occurred_at, now = occurred_at.astimezone(UTC), now.astimezone(UTC)
        notice = self.notice(purpose, notice_version)
        sealed = self.config.sealer.seal(self._subject_key(subject_id, now), evidence)
        valid_until = occurred_at + self.config.max_age if status in GRANTING_STATES else None
        event = self._append(
            subject_id,
            purpose,
            channel,
            status,
            notice,
            method,
            sealed,
            occurred_at,
            valid_until,
            now,
        )
        self._project(event)
        return event

    def _append(
        self,
        subject_id: str,
        purpose: Purpose,
        channel: Channel | None,
        status: ConsentStatus,
        notice: Notice,
        method: CollectionMethod,
        sealed: str,
        occurred_at: datetime,
        valid_until: datetime | None,
        now: datetime,
    ) -> ConsentEvent:
        # Write to the head row first: that takes the lock (a row lock on PostgreSQL, the write
        # lock on SQLite) before the head is read, so two appends can never chain to one parent.
        locked = self.session.execute(
            update(LedgerHead)
            .where(LedgerHead.id == 1)
            .values(last_id=LedgerHead.last_id)
            .execution_options(synchronize_session=False)
        )
        if not locked.rowcount:  # type: ignore[attr-defined]
            self.session.add(LedgerHead(id=1, last_id=0, last_hash=GENESIS_HASH))
            self.session.flush()
        head = self.session.get(LedgerHead, 1, populate_existing=True)
        assert head is not None
        event = ConsentEvent(
            subject_id=subject_id,
            purpose=purpose.value,
            channel=channel.value if channel else NO_CHANNEL,
            state=status.value,
            notice_id=notice.id,
            notice_version=notice.version,
            method=method.value,
            evidence_sealed=sealed,
            occurred_at=occurred_at,
            valid_until=valid_until,
            recorded_at=now,
            prev_hash=head.last_hash,
            entry_hash="",
        )
        self.session.add(event)
        self.session.flush()  # assigns the id, which the hash covers
        event.entry_hash = chain_hash(head.last_hash, event_fields(event))
        head.last_id, head.last_hash = event.id, event.entry_hash
        if event.id % self.config.checkpoint_every == 0:
            self.checkpoint(event.id, event.entry_hash, now)
        self.session.flush()
        return event

    def checkpoint(self, last_id: int, entry_hash: str, now: datetime) -> ConsentCheckpoint:
        signed_at = now.isoformat()
        checkpoint = ConsentCheckpoint(
            last_id=last_id,
            entry_hash=entry_hash,
            signed_at=now,
            public_key=self.config.signer.public_key,
            signature=self.config.signer.sign(checkpoint_message(last_id, entry_hash, signed_at)),
        )
        self.session.add(checkpoint)
        self.session.flush()
        return checkpoint

    def checkpoint_head(self, now: datetime) -> ConsentCheckpoint | None:
        """Sign the current head (e.g. at export time). None for an empty ledger."""
        head = self.session.get(LedgerHead, 1)
        if head is None or head.last_id == 0:
            return None
        return self.checkpoint(head.last_id, head.last_hash, now)

    def _project(self, event: ConsentEvent) -> None:
        key = (event.subject_id, event.purpose, event.channel)
        current = self.session.get(ConsentState, key)
        if current is None:
            self.session.add(
                ConsentState(
                    subject_id=event.subject_id,
                    purpose=event.purpose,
                    channel=event.channel,
                    state=event.state,
                    event_id=event.id,
                    event_hash=event.entry_hash,
                    occurred_at=event.occurred_at,
                    valid_until=event.valid_until,
                )
            )
        elif current.occurred_at <= event.occurred_at:
            current.state, current.event_id = event.state, event.id
            current.event_hash, current.occurred_at = event.entry_hash, event.occurred_at
            current.valid_until = event.valid_until
        self.session.flush()

    def _subject_key(self, subject_id: str, now: datetime) -> str:
        key = self.session.get(SubjectKey, subject_id)
        if key is None:
            key = SubjectKey(
                subject_id=subject_id,
                wrapped_key=self.config.sealer.new_wrapped_key(),
                created_at=now,
            )
            self.session.add(key)
            self.session.flush()
        return key.wrapped_key

    @staticmethod
    def current_of(session: Session, subject_id: str) -> list[ConsentState]:
        return list(
            session.scalars(
                select(ConsentState)
                .where(ConsentState.subject_id == subject_id)
                .order_by(ConsentState.purpose, ConsentState.channel)
            )
        )
