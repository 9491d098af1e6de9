"""Point of sale: redeem a coupon at the till."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import RuntimeDep, SessionDep, require_pos
from api.errors import ErrorResponse
from api.schemas import RedemptionIn, RedemptionOut
from offers.redemption import CouponRedeemer

router = APIRouter(
    prefix="/v1/pos",
    tags=["pos"],
    dependencies=[require_pos],
    responses={s: {"model": ErrorResponse} for s in (401, 404, 409, 410, 422)},
)


@router.post(
    "/redemptions",
    response_model=RedemptionOut,
    summary="Redeem a coupon (404 unknown or other store, 409 already redeemed, 410 expired)",
)
def redeem(body: RedemptionIn, session: SessionDep, runtime: RuntimeDep) -> RedemptionOut:
    redemption = CouponRedeemer(session).redeem(
        raw_code=body.code, store_id=body.store_id, now=runtime.clock.now()
    )
    return RedemptionOut(
        coupon_id=redemption.coupon_id,
        code=redemption.code,
        store_id=redemption.store_id,
        title=redemption.title,
        discount_text=redemption.discount_text,
        redeemed_at=redemption.redeemed_at,
    )
