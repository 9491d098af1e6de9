"""Point-of-sale redemption: one conditional update decides; the loser learns why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from offers.domain import (
    CouponAlreadyRedeemed,
    CouponExpired,
    CouponStatus,
    CouponUnknown,
    normalise_code,
)
from offers.models import Offer
from offers.repository import CouponRepository

UNKNOWN_MESSAGE = "no coupon with this code can be redeemed at this store"


@dataclass(frozen=True, slots=True)
class Redemption:
    coupon_id: str
    code: str
    store_id: str
    title: str
    discount_text: str
    redeemed_at: datetime


class CouponRedeemer:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.coupons = CouponRepository(session)

    def redeem(self, *, raw_code: str, store_id: str, now: datetime) -> Redemption:
        code = normalise_code(raw_code)
        won = self.coupons.redeem(code=code, store_id=store_id, now=now)
        coupon = self.coupons.by_code(code)
        # Unknown code and another store's code get the same answer: a guess learns nothing.
        if coupon is None or coupon.store_id != store_id:
            raise CouponUnknown(UNKNOWN_MESSAGE)
        self.session.refresh(coupon)
        if not won:
            if coupon.status == CouponStatus.REDEEMED.value:
                when = coupon.redeemed_at.isoformat() if coupon.redeemed_at else "an unknown time"
                raise CouponAlreadyRedeemed(f"coupon was already redeemed at {when}")
            raise CouponExpired(f"coupon expired at {coupon.expires_at.isoformat()}")
        offer = self.session.get(Offer, coupon.offer_id)
        assert offer is not None and coupon.redeemed_at is not None
        return Redemption(
            coupon.id,
            coupon.code,
            coupon.store_id,
            offer.title,
            offer.discount_text,
            coupon.redeemed_at,
        )
