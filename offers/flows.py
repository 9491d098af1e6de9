"""The ping path, in one transaction: consent gate -> store fixes -> match -> events -> offers."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from consent.domain import ConsentDecision, Purpose
from consent.service import ConsentLedger, SubjectRegistry
from core.clock import Clock
from core.db import on_commit, transaction
from core.errors import Unauthenticated
from core.state import HotState
from geo.domain import Fix, advance_presence
from geo.index import LiveFenceIndex
from geo.models import FenceEvent
from geo.repository import PingRepository
from offers.service import IssuedCoupon, OfferIssuer

PRESENCE_TTL_S = 7 * 86400


@dataclass(slots=True)
class IngestResult:
    accepted: int
    consent: ConsentDecision
    events: list[FenceEvent] = field(default_factory=list)
    coupons: list[IssuedCoupon] = field(default_factory=list)


class PingIngestor:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        state: HotState,
        fences: LiveFenceIndex,
        clock: Clock,
        channels: Collection[str],
        enqueue_delivery: Callable[[str], None],
        max_accuracy_m: float,
    ) -> None:
        self.sessions = sessions
        self.state = state
        self.fences = fences
        self.clock = clock
        self.channels = channels
        self.enqueue_delivery = enqueue_delivery
        self.max_accuracy_m = max_accuracy_m

    def ingest(self, device_id: str, token_version: int, fixes: Sequence[Fix]) -> IngestResult:
        """Process one device's batch. Raises ``ConsentRequired`` before anything is stored."""
        now = self.clock.now()
        with transaction(self.sessions) as session:
            device = SubjectRegistry(session).device(device_id)
            if device.token_version != token_version:
                raise Unauthenticated("device token no longer valid; register the device again")
            consent = (
                ConsentLedger(session).check(device.subject_id, Purpose.LOCATION_TRACKING).require()
            )
            pings = PingRepository(session)
            pings.add_fixes(device.subject_id, fixes, now)
            index = self.fences.current()
            matches = index.match([f.lon for f in fixes], [f.lat for f in fixes])
            previous = self.state.load_presence([device_id]).get(device_id)
            record, transitions = advance_presence(
                device_id,
                previous,
                list(zip(fixes, matches, strict=True)),
                index.by_id,
                self.max_accuracy_m,
            )
            events = pings.add_events(device.subject_id, transitions, now)
            issuer = OfferIssuer(session, self.state, self.channels, self.enqueue_delivery)
            coupons: list[IssuedCoupon] = []
            for event in events:
                if event.kind == "enter":
                    coupons.extend(issuer.on_enter(event, device, now))
            on_commit(
                session, lambda: self.state.store_presence({device_id: record}, PRESENCE_TTL_S)
            )
        return IngestResult(len(fixes), consent, events, coupons)
