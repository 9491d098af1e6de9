"""The ping path, in one transaction: consent gate -> store fixes -> match -> events -> offers."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from consent.domain import ConsentDecision, ConsentRequired, Purpose
from consent.gate import ConsentGate
from consent.models import Device
from consent.service import SubjectRegistry
from core.clock import Clock
from core.db import on_commit, transaction
from core.errors import NotFound, Unauthenticated, Unavailable
from core.state import DEVICE_LOCK_TTL_S, HotState, device_lock
from geo.domain import Fix, FixBatch
from geo.hours import is_open
from geo.index import LiveFenceIndex, StoreInfo
from geo.matcher import BatchMatcher
from geo.models import FenceEvent
from geo.repository import PingRepository
from geo.tracking import Transition
from offers.decisions import DecisionLog, VariantPicker
from offers.eligibility import IssueLimits
from offers.service import IssuedCoupon, OfferIssuer

PRESENCE_TTL_S = 7 * 86400
OFFER_TRIGGERS = frozenset({"enter", "dwell", "approaching"})


@dataclass(frozen=True, slots=True)
class PingBatch:
    """One request's fixes, all of one device, as its token presented them."""

    device_id: str
    token_version: int
    fixes: Sequence[Fix]
    privacy_signal: str | None = None


class DeviceBusy(Unavailable):
    """Another request of the device holds its lock (in another process); try again soon."""


@dataclass(slots=True)
class IngestResult:
    accepted: int
    consent: ConsentDecision
    ignored: dict[str, int] = field(default_factory=dict)
    events: list[FenceEvent] = field(default_factory=list)
    coupons: list[IssuedCoupon] = field(default_factory=list)


def eligibility(transition: Transition, store: StoreInfo | None) -> tuple[bool, str | None]:
    """Whether an event may trigger an offer: the store must be open when the shopper is there
    (for ``approaching``, at the predicted arrival)."""
    if store is None:
        return False, "unknown_store"
    at = transition.occurred_at + timedelta(seconds=transition.details.get("eta_s", 0.0))
    if not is_open(store.opening_hours, store.timezone, at):
        return False, "store_closed"
    return True, None


class PingIngestor:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        state: HotState,
        fences: LiveFenceIndex,
        clock: Clock,
        matcher: BatchMatcher,
        channels: Collection[str],
        enqueue_delivery: Callable[[str], None],
        issue_limits: IssueLimits | None = None,
        *,
        picker: VariantPicker | None = None,
        holdout_secret: bytes = b"",
    ) -> None:
        self.issue_limits = issue_limits or IssueLimits()
        self.picker = picker or VariantPicker()
        self.holdout_secret = holdout_secret
        self.sessions = sessions
        self.state = state
        self.fences = fences
        self.clock = clock
        self.matcher = matcher
        self.channels = channels
        self.enqueue_delivery = enqueue_delivery

    def ingest_many(self, batches: Sequence[PingBatch]) -> list[IngestResult | Exception]:
        """Process several devices' batches in one transaction (at most one batch per device):
        one read of the devices, of their consent and of their presence, one insert of all the
        fixes, one commit. Each batch gets its own outcome, in order: its result, or the error
        that refused it alone (``Unauthenticated``, ``NotFound``, ``ConsentRequired``; the
        refusal's receipt is kept; ``DeviceBusy`` when another request of the device holds its
        lock, nothing of it done). An error of the whole transaction (the database or the hot
        state) is raised and nothing is kept.

        Each device's lock is held from before its presence is read until after the commit, so
        two requests of one device never overlap, whichever processes they reach. Nothing here
        waits for a lock: the caller sends a busy device's batch again later."""
        if len({b.device_id for b in batches}) != len(batches):
            raise ValueError("at most one batch per device in one transaction")
        names = [device_lock(b.device_id) for b in batches]
        owner = secrets.token_hex(8)
        held = self.state.acquire_locks(names, owner, DEVICE_LOCK_TTL_S)
        try:
            locked = [b for b, h in zip(batches, held, strict=True) if h]
            results = iter(self._ingest_locked(locked) if locked else [])
        finally:
            self.state.release_locks([n for n, h in zip(names, held, strict=True) if h], owner)
        return [
            next(results)
            if h
            else DeviceBusy(
                f"another ping request of device {b.device_id} is still being processed; "
                "send this one again"
            )
            for b, h in zip(batches, held, strict=True)
        ]

    def _ingest_locked(self, batches: Sequence[PingBatch]) -> list[IngestResult | Exception]:
        now = self.clock.now()
        outcomes: list[IngestResult | Exception] = []
        with transaction(self.sessions) as session:
            devices = SubjectRegistry(session).devices([b.device_id for b in batches])
            gate = ConsentGate(session, self.state)
            gate.prefetch([d.subject_id for d in devices.values()])
            admitted: list[tuple[PingBatch, Device, ConsentDecision]] = []
            receipts: list[tuple[str, ConsentDecision, dict[str, Any]]] = []
            for batch in batches:
                device = devices.get(batch.device_id)
                if device is None:
                    outcomes.append(NotFound(f"device {batch.device_id} is not registered"))
                    continue
                if device.token_version != batch.token_version:
                    outcomes.append(
                        Unauthenticated("device token no longer valid; register the device again")
                    )
                    continue
                consent = gate.check(device.subject_id, Purpose.LOCATION_TRACKING, None, now)
                if batch.privacy_signal is not None:
                    consent = replace(
                        consent,
                        allowed=False,
                        reason=f"{batch.privacy_signal}: precise location is not processed",
                    )
                receipts.append(
                    (
                        device.subject_id,
                        consent,
                        {"device_id": device.id, "fixes": len(batch.fixes)},
                    )
                )
                if consent.allowed:
                    admitted.append((batch, device, consent))
                    outcomes.append(IngestResult(0, consent))  # filled in below
                else:
                    outcomes.append(ConsentRequired(consent.reason))
            gate.add_receipts("ping", receipts, now)
            results = iter(self._process(session, admitted, now))
            outcomes = [next(results) if isinstance(o, IngestResult) else o for o in outcomes]
        return outcomes

    def _process(
        self,
        session: Session,
        admitted: Sequence[tuple[PingBatch, Device, ConsentDecision]],
        now: datetime,
    ) -> list[IngestResult]:
        if not admitted:
            return []
        snapshot = self.fences.current()
        devices = {device.id: device for _, device, _ in admitted}
        records = self.state.load_presence(devices)
        fixes = [fix for batch, _, _ in admitted for fix in batch.fixes]
        outcome = self.matcher.process(snapshot.index, FixBatch.of(fixes), records)
        statuses = outcome.statuses
        pings = PingRepository(session)
        subject_of = {device_id: device.subject_id for device_id, device in devices.items()}
        subjects = [subject_of[f.device_id] for f in fixes]
        pings.add_fixes(subjects, fixes, [s.value for s in statuses], now)
        judged = [
            (t, *eligibility(t, snapshot.stores.get(t.fence.store_id))) for t in outcome.transitions
        ]
        events = pings.add_events(subject_of, judged, now)
        own_events: dict[str, list[FenceEvent]] = {device_id: [] for device_id in devices}
        for event in events:
            own_events[event.device_id].append(event)
        issuer = OfferIssuer(
            session,
            self.state,
            self.channels,
            self.enqueue_delivery,
            self.issue_limits,
            picker=self.picker,
            holdout_secret=self.holdout_secret,
        )
        issuer.prefetch({e.store_id for e in events if e.kind in OFFER_TRIGGERS})
        coupons: dict[str, list[IssuedCoupon]] = {device_id: [] for device_id in devices}
        for event in events:
            if event.kind in OFFER_TRIGGERS and event.eligible:
                device = devices[event.device_id]
                coupons[device.id].extend(issuer.on_trigger(event, device, now))
            elif event.kind in OFFER_TRIGGERS:
                issuer.on_ineligible(event, now)
        visits = DecisionLog(session)
        for device_id, device_events in own_events.items():
            dwells = [e for e in device_events if e.kind == "dwell"]
            visits.record_visits(subject_of[device_id], dwells)
        new_records = {d: r for d, r in outcome.records.items() if d in devices}
        on_commit(session, lambda: self.state.store_presence(new_records, PRESENCE_TTL_S))
        results = []
        first = 0
        for batch, device, consent in admitted:
            own = statuses[first : first + len(batch.fixes)]
            first += len(batch.fixes)
            ignored = Counter(s.value for s in own if s.value != "used")
            results.append(
                IngestResult(
                    len(own) - sum(ignored.values()),
                    consent,
                    dict(ignored),
                    own_events[device.id],
                    coupons[device.id],
                )
            )
        return results
