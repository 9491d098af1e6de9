"""Point of sale: redeem a coupon at the till."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CallerDep, RuntimeDep, SessionDep, require_pos
from api.errors import ErrorResponse
from api.schemas import RedemptionIn, RedemptionOut
from core.errors import Forbidden
from offers.redemption import CouponRedeemer

router = APIRouter(
    prefix="/v1/pos",
    tags=["pos"],
    dependencies=[require_pos],
    responses={s: {"model": ErrorResponse} for s in (401, 403, 404, 409, 410, 422)},
)


@router.post(
    "/redemptions",
    response_model=RedemptionOut,
    summary="Redeem a coupon (404 unknown or other store, 409 already redeemed, 410 expired)",
)
def redeem(
    body: RedemptionIn, session: SessionDep, runtime: RuntimeDep, caller: CallerDep
) -> RedemptionOut:
    if not caller.may_act_for(body.store_id):
        raise Forbidden(f"this terminal's key ({caller.label}) may not redeem for that store")
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
