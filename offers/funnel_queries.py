"""SQL side of the analytics: a campaign's decisions with what followed each of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from offers.analytics import DecisionFacts
from offers.domain import CouponStatus, DeliveryStatus
from offers.models import Coupon, CouponOpen, Delivery, OfferDecision


class FunnelQueries:
    def __init__(self, session: Session) -> None:
        self.session = session

    def facts(
        self,
        campaign_ids: Sequence[str],
        now: datetime,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DecisionFacts]:
        where: list[ColumnElement[bool]] = [OfferDecision.campaign_id.in_(list(campaign_ids))]
        if since is not None:
            where.append(OfferDecision.decided_at >= since)
        if until is not None:
            where.append(OfferDecision.decided_at < until)
        decisions = list(
            self.session.scalars(select(OfferDecision).where(*where).order_by(OfferDecision.id))
        )
        coupon_ids = [d.coupon_id for d in decisions if d.coupon_id]
        coupons: dict[str, Coupon] = {}
        sent: dict[str, tuple[int, int]] = {}
        opened: set[str] = set()
        for chunk in _chunks(coupon_ids, 500):
            coupons.update(
                (c.id, c) for c in self.session.scalars(select(Coupon).where(Coupon.id.in_(chunk)))
            )
            accepted = func.sum(case((Delivery.status == DeliveryStatus.SENT.value, 1), else_=0))
            for coupon_id, attempts, ok in self.session.execute(
                select(Delivery.coupon_id, func.max(Delivery.attempts), accepted)
                .where(Delivery.coupon_id.in_(chunk))
                .group_by(Delivery.coupon_id)
            ):
                sent[coupon_id] = (int(attempts or 0), int(ok or 0))
            opened.update(
                self.session.scalars(
                    select(CouponOpen.coupon_id).where(CouponOpen.coupon_id.in_(chunk))
                )
            )
        facts: list[DecisionFacts] = []
        for d in decisions:
            coupon = coupons.get(d.coupon_id or "")
            attempts, ok = sent.get(d.coupon_id or "", (0, 0))
            redeemed = coupon is not None and coupon.status == CouponStatus.REDEEMED.value
            minutes = None
            if redeemed and coupon is not None and coupon.redeemed_at is not None:
                minutes = (coupon.redeemed_at - coupon.issued_at).total_seconds() / 60
            facts.append(
                DecisionFacts(
                    campaign_id=d.campaign_id,
                    offer_id=d.offer_id,
                    store_id=d.store_id,
                    decided_at=d.decided_at,
                    outcome=d.outcome,
                    reason=d.reason,
                    visited=d.visited_at is not None,
                    purchased=d.purchased_at is not None,
                    sent=attempts > 0,
                    delivered=ok > 0,
                    # a tracked link (coupon_opens) or the app's opened callback (opened_at)
                    opened=(d.coupon_id or "") in opened
                    or (coupon is not None and coupon.opened_at is not None),
                    redeemed=redeemed,
                    expired=coupon is not None and not redeemed and coupon.expires_at <= now,
                    redeem_minutes=minutes,
                )
            )
        return facts

    def record_open(self, coupon_id: str, at: datetime, via: str) -> bool:
        """The first open of a coupon; later ones change nothing. False for an unknown coupon."""
        if self.session.get(Coupon, coupon_id) is None:
            return False
        if self.session.get(CouponOpen, coupon_id) is None:
            self.session.add(CouponOpen(coupon_id=coupon_id, opened_at=at, via=via))
            self.session.flush()
        return True


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
