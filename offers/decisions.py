"""The experiment's records: one decision per (trigger, campaign), visits and purchases.

Both groups are recorded alike, so the visit and purchase rates of the treated and the held-out
shoppers can be compared (see ``offers/analytics.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np
from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from geo.models import FenceEvent
from offers.domain import CouponStatus
from offers.experiments import VariantStats, choose_variant
from offers.models import Campaign, Coupon, Offer, OfferDecision


class Outcome(StrEnum):
    SUPPRESSED = "suppressed"
    HELD_OUT = "held_out"
    ISSUED = "issued"


EXPERIMENT_OUTCOMES = (Outcome.HELD_OUT.value, Outcome.ISSUED.value)


class DecisionLog:
    def __init__(self, session: Session) -> None:
        self.session = session

    def record(
        self,
        *,
        campaign: Campaign,
        event: FenceEvent,
        outcome: Outcome,
        now: datetime,
        reason: str | None = None,
        offer_id: str | None = None,
        coupon_id: str | None = None,
        anonymous: bool = False,
        details: dict[str, Any] | None = None,
    ) -> OfferDecision:
        decision = OfferDecision(
            campaign_id=campaign.id,
            offer_id=offer_id,
            store_id=event.store_id,
            subject_id="" if anonymous else event.subject_id,
            trigger_event_id=event.id,
            trigger_kind=event.kind,
            trigger_at=event.occurred_at,
            outcome=outcome.value,
            reason=reason,
            coupon_id=coupon_id,
            decided_at=now,
            visit_until=event.occurred_at + timedelta(minutes=campaign.visit_window_minutes),
            details=details or {},
        )
        self.session.add(decision)
        return decision

    def record_visits(self, subject_id: str, dwells: Iterable[FenceEvent]) -> int:
        """A dwell in the triggering store after the trigger and within the window is a visit,
        for the treated and the held-out alike (the first such dwell counts)."""
        visits = 0
        for dwell in dwells:
            result = self.session.execute(
                update(OfferDecision)
                .where(
                    OfferDecision.subject_id == subject_id,
                    OfferDecision.store_id == dwell.store_id,
                    OfferDecision.outcome.in_(EXPERIMENT_OUTCOMES),
                    OfferDecision.visited_at.is_(None),
                    OfferDecision.trigger_at < dwell.occurred_at,
                    OfferDecision.visit_until >= dwell.occurred_at,
                )
                .values(visited_at=dwell.occurred_at)
                .execution_options(synchronize_session=False)
            )
            visits += int(result.rowcount)  # type: ignore[attr-defined]
        return visits

    def record_purchase(self, subject_id: str, store_id: str, at: datetime) -> int:
        """A purchase reported by the till counts for every open trigger at that store."""
        result = self.session.execute(
            update(OfferDecision)
            .where(
                OfferDecision.subject_id == subject_id,
                OfferDecision.store_id == store_id,
                OfferDecision.outcome.in_(EXPERIMENT_OUTCOMES),
                OfferDecision.purchased_at.is_(None),
                OfferDecision.trigger_at <= at,
                OfferDecision.visit_until >= at,
            )
            .values(purchased_at=at)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def variant_stats(self, offers: Sequence[Offer], now: datetime) -> list[VariantStats]:
        """Per variant: treated triggers whose outcome is known (visit window closed, or a
        success already seen), with their redemptions and visits."""
        ids = [o.id for o in offers]
        redeemed = Coupon.status == CouponStatus.REDEEMED.value
        visited = OfferDecision.visited_at.is_not(None)
        known = (OfferDecision.visit_until < now) | visited | redeemed
        rows = self.session.execute(
            select(
                OfferDecision.offer_id,
                func.count(),
                func.sum(case((redeemed, 1), else_=0)),
                func.sum(case((visited, 1), else_=0)),
            )
            .join(Coupon, Coupon.id == OfferDecision.coupon_id)
            .where(
                OfferDecision.offer_id.in_(ids),
                OfferDecision.outcome == Outcome.ISSUED.value,
                known,
            )
            .group_by(OfferDecision.offer_id)
        )
        by_offer = {r[0]: (int(r[1]), int(r[2] or 0), int(r[3] or 0)) for r in rows}
        return [VariantStats(o.id, o.weight, *by_offer.get(o.id, (0, 0, 0))) for o in offers]


class VariantPicker:
    """One random generator per process (seedable for tests), used under a lock."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()

    def pick(
        self, session: Session, campaign: Campaign, offers: Sequence[Offer], now: datetime
    ) -> Offer:
        live = [o for o in offers if o.active] or list(offers)
        by_id = {o.id: o for o in live}
        stats = (
            DecisionLog(session).variant_stats(live, now)
            if campaign.selection == "adaptive" and len(live) > 1
            else [VariantStats(o.id, o.weight) for o in live]
        )
        with self.lock:
            chosen = choose_variant(campaign.selection, stats, self.rng)
        return by_id[chosen]
