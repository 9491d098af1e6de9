"""Point-of-sale redemption and void: one conditional update decides; the loser learns why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from offers.domain import (
    CouponAlreadyRedeemed,
    CouponExpired,
    CouponNotRedeemed,
    CouponStatus,
    CouponUnknown,
    normalise_code,
)
from offers.models import Coupon, Offer
from offers.repository import CampaignBudget, CouponRepository

UNKNOWN_MESSAGE = "no coupon with this code can be redeemed at this store"


@dataclass(frozen=True, slots=True)
class Redemption:
    coupon_id: str
    code: str
    store_id: str
    title: str
    discount_text: str
    redeemed_at: datetime


@dataclass(frozen=True, slots=True)
class Void:
    coupon_id: str
    code: str
    store_id: str
    status: str  # issued again (still valid) or expired (its time is over)
    expires_at: datetime
    voided_at: datetime


class CouponRedeemer:
    """Redeems while ``now < expires_at + grace`` at the coupon's store; voids a redemption
    made within ``void_window``."""

    def __init__(
        self,
        session: Session,
        grace: timedelta = timedelta(0),
        void_window: timedelta = timedelta(minutes=10),
    ) -> None:
        self.session = session
        self.grace = grace
        self.void_window = void_window
        self.coupons = CouponRepository(session)

    def _own(self, code: str, store_id: str) -> Coupon:
        coupon = self.coupons.by_code(code)
        # Unknown code and another store's code get the same answer: a guess learns nothing.
        if coupon is None or coupon.store_id != store_id:
            raise CouponUnknown(UNKNOWN_MESSAGE)
        self.session.refresh(coupon)
        return coupon

    def redeem(self, *, raw_code: str, store_id: str, now: datetime) -> Redemption:
        code = normalise_code(raw_code)
        won = self.coupons.redeem(code=code, store_id=store_id, now=now, grace=self.grace)
        coupon = self._own(code, store_id)
        if not won:
            if coupon.status == CouponStatus.REDEEMED.value:
                when = coupon.redeemed_at.isoformat() if coupon.redeemed_at else "an unknown time"
                raise CouponAlreadyRedeemed(f"coupon was already redeemed at {when}")
            if coupon.issued_at > now:
                raise CouponUnknown(UNKNOWN_MESSAGE)
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

    def void(self, *, raw_code: str, store_id: str, now: datetime) -> Void:
        """Undo a redemption at the store that made it. A coupon still valid is issued again
        (its liability stays reserved until it expires); one whose time is over becomes expired
        and its liability goes back to the campaign's budget."""
        code = normalise_code(raw_code)
        grace, window = self.grace, self.void_window
        restored = self.coupons.unredeem(
            code=code, store_id=store_id, now=now, grace=grace, window=window
        )
        ended = None
        if not restored:
            ended = self.coupons.void_expired(
                code=code, store_id=store_id, now=now, grace=grace, window=window
            )
            if ended is not None:
                CampaignBudget(self.session).release(*ended)
        coupon = self._own(code, store_id)
        if not restored and ended is None:
            if coupon.status == CouponStatus.REDEEMED.value:
                minutes = int(self.void_window.total_seconds() // 60)
                raise CouponNotRedeemed(
                    f"the redemption is older than the {minutes}-minute void window"
                )
            raise CouponNotRedeemed(f"coupon is {coupon.status}; there is no redemption to void")
        return Void(coupon.id, coupon.code, coupon.store_id, coupon.status, coupon.expires_at, now)
