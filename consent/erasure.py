"""Erasure of a subject (GDPR Art. 17), in one transaction.

The ledger is append-only and stays so: every consent that has not ended gets an
``invalidated`` event (method ``api``), so the ledger itself proves when processing ended. Then
the subject's key is deleted: the sealed evidence of every event becomes unreadable while the
chain, whose hashes cover the sealed bytes, still verifies. Devices stay as bare rows (no push
token, no email, every device token revoked), preferences go, the subject keeps only its
pseudonymous id and ``erased_at``.

Data held by other domains (pings, fence events, delivery addresses) is erased by the
``PersonalDataHolder`` objects passed in: ``consent`` does not import those domains.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.domain import NO_CHANNEL, Channel, CollectionMethod, ConsentStatus, Purpose
from consent.gate import ConsentGate
from consent.ledger import ConsentLedger, LedgerConfig
from consent.models import ConsentEvent, Device, Subject, SubjectKey
from consent.optin import ENDED_STATES
from consent.preferences import PreferencesRepository
from core.audit import audit
from core.db import after_transaction, on_commit
from core.errors import NotFound, Unavailable
from core.state import HotState, device_lock

ERASURE_REASON = "erasure request (GDPR Art. 17)"
DEVICE_WAIT_S = 10.0  # how long an erasure waits for pings of its devices still in progress
DEVICE_HOLD_S = 120.0  # its hold on them (released when it ends): longer than any erasure


class PersonalDataHolder(Protocol):
    """Another domain's personal data about a subject, erased in the same transaction."""

    def erase_subject(
        self, session: Session, subject_id: str, device_ids: Sequence[str], now: datetime
    ) -> dict[str, int]:
        """Erase and return counts by kind (e.g. ``{"pings": 12}``)."""
        ...


@dataclass(frozen=True, slots=True)
class ErasureReport:
    subject_id: str
    erased_at: datetime
    already_erased: bool
    ledger_event_ids: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    evidence_shredded: bool = False


class SubjectEraser:
    def __init__(
        self,
        session: Session,
        config: LedgerConfig,
        state: HotState,
        holders: Sequence[PersonalDataHolder] = (),
    ) -> None:
        self.session = session
        self.ledger = ConsentLedger(session, config)
        self.gate = ConsentGate(session, state)
        self.state = state
        self.holders = holders

    def erase(
        self, subject_id: str, *, actor: str, now: datetime, reference: str | None = None
    ) -> ErasureReport:
        """Erase the subject. A second call changes nothing and says so."""
        subject = self.session.scalar(
            select(Subject).where(Subject.id == subject_id).with_for_update()
        )
        if subject is None:
            raise NotFound(f"subject {subject_id} is not known")
        if subject.erased_at is not None:
            return ErasureReport(subject_id, subject.erased_at, already_erased=True)

        event_ids = self._end_every_consent(subject_id, actor, now)
        devices = list(self.session.scalars(select(Device).where(Device.subject_id == subject_id)))
        device_ids = [d.id for d in devices]
        self._hold_devices(device_ids)
        counts: dict[str, int] = {}
        for holder in self.holders:
            counts.update(holder.erase_subject(self.session, subject_id, device_ids, now))
        for device in devices:
            device.push_token = None
            device.email = None
            device.token_version += 1  # every device token issued so far stops working
        counts["devices_scrubbed"] = len(devices)
        counts["preferences"] = int(PreferencesRepository(self.session).delete(subject_id))
        key = self.session.get(SubjectKey, subject_id)
        if key is not None:
            self.session.delete(key)
        subject.erased_at = now
        subject.external_ref = f"erased:{subject.id}"  # the app's own id for the person goes
        self.session.flush()
        audit(
            self.session,
            actor=actor,
            action="subject.erased",
            at=now,
            target=subject_id,
            details={"reference": reference, "ledger_event_ids": event_ids, **counts},
        )
        self.gate.invalidate_after_commit(subject_id)
        state = self.state
        on_commit(self.session, lambda: state.forget_presence(device_ids))
        return ErasureReport(subject_id, now, False, event_ids, counts, key is not None)

    def _hold_devices(self, device_ids: Sequence[str]) -> None:
        """Take every device's lock (as a ping group does) until the transaction ends: pings
        already being processed finish and commit first, later ones wait and then meet revoked
        tokens, so no fix or presence of the subject is written after the erasure."""
        names = [device_lock(d) for d in device_ids]
        owner = secrets.token_hex(8)
        held: set[str] = set()
        deadline = time.monotonic() + DEVICE_WAIT_S
        state = self.state
        after_transaction(self.session, lambda: state.release_locks(sorted(held), owner))
        while True:
            waiting = [n for n in names if n not in held]
            taken = state.acquire_locks(waiting, owner, DEVICE_HOLD_S)
            held.update(n for n, ok in zip(waiting, taken, strict=True) if ok)
            if len(held) == len(names):
                return
            if time.monotonic() >= deadline:
                raise Unavailable(
                    "pings of this subject's devices are still being processed; "
                    "erase again in a moment"
                )
            time.sleep(0.01)

    def _end_every_consent(self, subject_id: str, actor: str, now: datetime) -> list[int]:
        """Append ``invalidated`` for each (purpose, channel) whose consent has not ended.
        Recorded before the key is shredded (the evidence is sealed with it)."""
        ids: list[int] = []
        for row in ConsentLedger.current_of(self.session, subject_id):
            if row.state in ENDED_STATES:
                continue
            last = self.session.get(ConsentEvent, row.event_id)
            assert last is not None
            event = self.ledger.record(
                subject_id=subject_id,
                purpose=Purpose(row.purpose),
                channel=Channel(row.channel) if row.channel != NO_CHANNEL else None,
                status=ConsentStatus.INVALIDATED,
                notice_version=last.notice_version,
                method=CollectionMethod.API,
                evidence={"reason": ERASURE_REASON, "actor": actor},
                occurred_at=now,
                now=now,
            )
            ids.append(event.id)
        return ids
