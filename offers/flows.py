"""The ping path, in one transaction: consent gate -> store fixes -> match -> events -> offers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from consent.domain import ConsentDecision, Purpose
from consent.service import ConsentLedger, SubjectRegistry
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
from offers.service import IssuedCoupon, OfferIssuer

PRESENCE_TTL_S = 7 * 86400
OFFER_TRIGGERS = frozenset({"enter"})


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
    ) -> None:
        self.sessions = sessions
        self.state = state
        self.fences = fences
        self.clock = clock
        self.matcher = matcher
        self.channels = channels
        self.enqueue_delivery = enqueue_delivery

    def ingest(self, device_id: str, token_version: int, fixes: Sequence[Fix]) -> IngestResult:
        """Process one device's batch. Raises ``ConsentRequired`` before anything is stored."""
        now = self.clock.now()
        with transaction(self.sessions) as session:
            device = SubjectRegistry(session).device(device_id)
            if device.token_version != token_version:
                raise Unauthenticated("device token no longer valid; register the device again")
            ledger = ConsentLedger(session)
            consent = ledger.check(device.subject_id, Purpose.LOCATION_TRACKING).require()
            snapshot = self.fences.current()
            records = self.state.load_presence([device_id])
            outcome = self.matcher.process(snapshot.index, FixBatch.of(fixes), records)
            statuses = outcome.statuses
            pings = PingRepository(session)
            pings.add_fixes(device.subject_id, fixes, [s.value for s in statuses], now)
            judged = [
                (t, *eligibility(t, snapshot.stores.get(t.fence.store_id)))
                for t in outcome.transitions
            ]
            events = pings.add_events(device.subject_id, judged, now)
            issuer = OfferIssuer(session, self.state, self.channels, self.enqueue_delivery)
            coupons: list[IssuedCoupon] = []
            for event in events:
                if event.kind in OFFER_TRIGGERS and event.eligible:
                    coupons.extend(issuer.on_enter(event, device, now))
            record = outcome.records[device_id]
            on_commit(
                session, lambda: self.state.store_presence({device_id: record}, PRESENCE_TTL_S)
            )
        ignored = Counter(s.value for s in statuses if s.value != "used")
        return IngestResult(
            len(fixes) - sum(ignored.values()), consent, dict(ignored), events, coupons
        )
