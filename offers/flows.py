"""The ping path, in one transaction: consent gate -> store fixes -> match -> events -> offers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from consent.domain import ConsentDecision, ConsentRequired, Purpose
from consent.gate import ConsentGate
from consent.models import Device
from consent.service import SubjectRegistry
from core.clock import Clock
from core.db import on_commit, transaction
from core.errors import Unauthenticated
from core.state import HotState
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

    def ingest(
        self,
        device_id: str,
        token_version: int,
        fixes: Sequence[Fix],
        privacy_signal: str | None = None,
    ) -> IngestResult:
        """Process one device's batch. Without current ``location_tracking`` consent, or with a
        privacy signal on the request, only the refusal's receipt is stored, then
        ``ConsentRequired`` is raised."""
        now = self.clock.now()
        with transaction(self.sessions) as session:
            device = SubjectRegistry(session).device(device_id)
            if device.token_version != token_version:
                raise Unauthenticated("device token no longer valid; register the device again")
            gate = ConsentGate(session, self.state)
            consent = gate.check(device.subject_id, Purpose.LOCATION_TRACKING, None, now)
            if privacy_signal is not None:
                consent = replace(
                    consent,
                    allowed=False,
                    reason=f"{privacy_signal}: precise location is not processed",
                )
            gate.receipt(
                device.subject_id,
                "ping",
                consent,
                now,
                details={"device_id": device_id, "fixes": len(fixes)},
            )
            if consent.allowed:
                result = self._process(session, device, fixes, consent, now)
        if not consent.allowed:
            raise ConsentRequired(consent.reason)
        return result

    def _process(
        self,
        session: Session,
        device: Device,
        fixes: Sequence[Fix],
        consent: ConsentDecision,
        now: datetime,
    ) -> IngestResult:
        snapshot = self.fences.current()
        records = self.state.load_presence([device.id])
        outcome = self.matcher.process(snapshot.index, FixBatch.of(fixes), records)
        statuses = outcome.statuses
        pings = PingRepository(session)
        pings.add_fixes(device.subject_id, fixes, [s.value for s in statuses], now)
        judged = [
            (t, *eligibility(t, snapshot.stores.get(t.fence.store_id))) for t in outcome.transitions
        ]
        events = pings.add_events(device.subject_id, judged, now)
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
        coupons: list[IssuedCoupon] = []
        for event in events:
            if event.kind in OFFER_TRIGGERS and event.eligible:
                coupons.extend(issuer.on_trigger(event, device, now))
            elif event.kind in OFFER_TRIGGERS:
                issuer.on_ineligible(event, now)
        DecisionLog(session).record_visits(
            device.subject_id, [e for e in events if e.kind == "dwell"]
        )
        record = outcome.records[device.id]
        device_id = device.id
        on_commit(session, lambda: self.state.store_presence({device_id: record}, PRESENCE_TTL_S))
        ignored = Counter(s.value for s in statuses if s.value != "used")
        accepted = len(fixes) - sum(ignored.values())
        return IngestResult(accepted, consent, dict(ignored), events, coupons)
