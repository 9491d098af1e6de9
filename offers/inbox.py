"""A shopper's own coupons as the app sees them: the live inbox, the opened callback, and
"why did I get this offer?".

Every lookup is by the coupon id *and* the caller's subject: a coupon of someone else is
answered exactly like an unknown id, so probing ids learns nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consent.models import ConsentEvent, ConsentReceipt
from core.errors import NotFound
from geo.models import FenceEvent, Store
from offers.domain import CouponStatus
from offers.models import Campaign, Coupon, Offer


@dataclass(frozen=True, slots=True)
class InboxCoupon:
    coupon: Coupon
    offer: Offer


@dataclass(frozen=True, slots=True)
class Opened:
    coupon_id: str
    opened_at: datetime
    first_open: bool
    status: str  # issued | redeemed | expired


@dataclass(frozen=True, slots=True)
class OfferExplanation:
    coupon: Coupon
    offer: Offer
    campaign: Campaign
    store: Store | None
    trigger: FenceEvent | None
    consent: ConsentEvent | None
    receipt: ConsentReceipt | None


def coupon_state(coupon: Coupon, now: datetime) -> str:
    if coupon.status != CouponStatus.ISSUED.value:
        return coupon.status
    return "issued" if coupon.expires_at > now else "expired"


class ShopperOffers:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _own(self, subject_id: str, coupon_id: str) -> Coupon:
        coupon = self.session.scalar(
            select(Coupon).where(Coupon.id == coupon_id, Coupon.subject_id == subject_id)
        )
        if coupon is None:
            raise NotFound(f"no offer {coupon_id} for this device", code="offer_not_found")
        return coupon

    def live(self, subject_id: str, now: datetime) -> list[InboxCoupon]:
        """Coupons still redeemable, soonest expiry first."""
        rows = self.session.execute(
            select(Coupon, Offer)
            .join(Offer, Offer.id == Coupon.offer_id)
            .where(
                Coupon.subject_id == subject_id,
                Coupon.status == CouponStatus.ISSUED.value,
                Coupon.expires_at > now,
            )
            .order_by(Coupon.expires_at, Coupon.id)
        )
        return [InboxCoupon(row[0], row[1]) for row in rows]

    def mark_opened(self, subject_id: str, coupon_id: str, now: datetime) -> Opened:
        """Record the first open; later calls change nothing and report the first time."""
        coupon = self._own(subject_id, coupon_id)
        result = self.session.execute(
            update(Coupon)
            .where(Coupon.id == coupon.id, Coupon.opened_at.is_(None))
            .values(opened_at=now)
            .execution_options(synchronize_session=False)
        )
        first = bool(getattr(result, "rowcount", 0))
        self.session.refresh(coupon)
        assert coupon.opened_at is not None
        return Opened(coupon.id, coupon.opened_at, first, coupon_state(coupon, now))

    def explain(self, subject_id: str, coupon_id: str) -> OfferExplanation:
        coupon = self._own(subject_id, coupon_id)
        offer = self.session.get(Offer, coupon.offer_id)
        campaign = self.session.get(Campaign, coupon.campaign_id)
        assert offer is not None and campaign is not None
        trigger = self.session.scalar(
            select(FenceEvent).where(
                FenceEvent.id == coupon.trigger_event_id, FenceEvent.subject_id == subject_id
            )
        )
        consent = self.session.scalar(
            select(ConsentEvent).where(
                ConsentEvent.id == coupon.consent_event_id, ConsentEvent.subject_id == subject_id
            )
        )
        receipt = self.session.scalar(
            select(ConsentReceipt)
            .where(
                ConsentReceipt.subject_id == subject_id,
                ConsentReceipt.action == "offer",
                ConsentReceipt.subject_ref == coupon.id,
            )
            .order_by(ConsentReceipt.id)
            .limit(1)
        )
        store = self.session.get(Store, coupon.store_id)
        return OfferExplanation(coupon, offer, campaign, store, trigger, consent, receipt)


def trigger_details(event: FenceEvent) -> dict[str, Any]:
    return {k: v for k, v in (event.details or {}).items() if isinstance(v, int | float)}
