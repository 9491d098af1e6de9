"""What compliance reads about one subject: their consent record (devices, every ledger entry
with the notice shown and the evidence, receipts of every decision), and the answer to "was this
lawful at time t?" rebuilt from the ledger as it stood then."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from consent.crypto import EvidenceSealer
from consent.domain import ConsentView, decide
from consent.models import (
    ConsentEvent,
    ConsentReceipt,
    ConsentState,
    Device,
    Notice,
    Preferences,
    Subject,
    SubjectKey,
)
from core.db import Base
from core.errors import NotFound


def plain(row: Base, *, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """A mapped row as JSON-ready values (datetimes as ISO 8601)."""
    out: dict[str, Any] = {}
    for column in row.__table__.columns:
        if column.key in without:
            continue
        value = getattr(row, column.key)
        out[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def find_subject(session: Session, key: str) -> Subject:
    """By subject id, else by the customer reference the app registered."""
    subject = session.get(Subject, key) or session.scalar(
        select(Subject).where(Subject.external_ref == key)
    )
    if subject is None:
        raise NotFound(f"no subject with id or customer reference '{key}'")
    return subject


class SubjectConsentRecord:
    def __init__(self, session: Session, sealer: EvidenceSealer) -> None:
        self.session = session
        self.sealer = sealer

    def build(self, subject: Subject) -> dict[str, Any]:
        session = self.session
        key = session.get(SubjectKey, subject.id)
        events = list(
            session.scalars(
                select(ConsentEvent)
                .where(ConsentEvent.subject_id == subject.id)
                .order_by(ConsentEvent.id)
            )
        )
        notice_ids = {e.notice_id for e in events if e.notice_id}
        notices = list(
            session.scalars(select(Notice).where(Notice.id.in_(notice_ids)).order_by(Notice.id))
        )
        preferences = session.get(Preferences, subject.id)
        return {
            "subject": plain(subject),
            "evidence_key": "present" if key is not None else "shredded",
            "devices": [
                plain(d)
                for d in session.scalars(
                    select(Device).where(Device.subject_id == subject.id).order_by(Device.id)
                )
            ],
            "consents": {
                "current": [
                    plain(s, without=("subject_id",))
                    for s in session.scalars(
                        select(ConsentState)
                        .where(ConsentState.subject_id == subject.id)
                        .order_by(ConsentState.purpose, ConsentState.channel)
                    )
                ],
                "history": [self._event(e, key.wrapped_key if key else None) for e in events],
            },
            "notices_shown": [plain(n) for n in notices],
            "receipts": [
                plain(r, without=("subject_id",))
                for r in session.scalars(
                    select(ConsentReceipt)
                    .where(ConsentReceipt.subject_id == subject.id)
                    .order_by(ConsentReceipt.id)
                )
            ],
            "preferences": plain(preferences) if preferences is not None else None,
        }

    def _event(self, event: ConsentEvent, wrapped_key: str | None) -> dict[str, Any]:
        out = plain(event, without=("subject_id",))
        status, evidence = "shredded", None
        if wrapped_key is not None:
            try:
                evidence, status = self.sealer.open(wrapped_key, event.evidence_sealed), "opened"
            except Exception:  # damaged or forged ciphertext: say so, keep the rest
                status = "unreadable"
        out["evidence"], out["evidence_status"] = evidence, status
        return out


def lawful_at(
    session: Session, subject: Subject, at: datetime, window: timedelta
) -> dict[str, Any]:
    """The receipts around ``at`` with the ledger entry each relied on, and each consent as the
    ledger stood at ``at`` (entries recorded by then; the projection's rule: latest occurrence)."""
    receipts = list(
        session.scalars(
            select(ConsentReceipt)
            .where(
                ConsentReceipt.subject_id == subject.id,
                ConsentReceipt.decided_at >= at - window,
                ConsentReceipt.decided_at <= at + window,
            )
            .order_by(ConsentReceipt.decided_at, ConsentReceipt.id)
        )
    )
    relied = {r.event_id for r in receipts if r.event_id is not None}
    events = {
        e.id: e
        for e in session.scalars(
            select(ConsentEvent).where(
                ConsentEvent.subject_id == subject.id,
                or_(ConsentEvent.id.in_(relied), ConsentEvent.recorded_at <= at),
            )
        )
    }
    standing: dict[tuple[str, str], ConsentEvent] = {}
    for event in sorted(events.values(), key=lambda e: e.id):
        if event.recorded_at > at:
            continue
        key = (event.purpose, event.channel)
        if key not in standing or standing[key].occurred_at <= event.occurred_at:
            standing[key] = event
    consents = []
    for (purpose, channel), event in sorted(standing.items()):
        view = ConsentView(event.state, event.id, event.entry_hash, event.valid_until)
        decision = decide(purpose, channel, view, at)
        consents.append(
            {
                "purpose": purpose,
                "channel": channel or None,
                "state": event.state,
                "event_id": event.id,
                "event_hash": event.entry_hash,
                "valid_until": event.valid_until.isoformat() if event.valid_until else None,
                "allowed": decision.allowed,
                "reason": decision.reason,
            }
        )
    out = []
    for receipt in receipts:
        item = plain(receipt, without=("subject_id",))
        relied_on = events.get(receipt.event_id) if receipt.event_id is not None else None
        item["event"] = None
        if relied_on is not None:
            item["event"] = {
                **plain(relied_on, without=("subject_id", "evidence_sealed", "prev_hash")),
                "hash_matches_receipt": relied_on.entry_hash == receipt.event_hash,
            }
        out.append(item)
    return {
        "subject_id": subject.id,
        "at": at.isoformat(),
        "window_s": int(window.total_seconds()),
        "receipts": out,
        "consent_at": consents,
    }
