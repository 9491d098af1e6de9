"""Point of sale: redeem a coupon at the till, or void a redemption just made.

Both take an optional ``Idempotency-Key`` header: a retried request gets the stored answer.
Failed lookups (unknown code, another store's code) count towards a lockout per terminal (its API
key) and per IP address: too many in the window -> 429 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.deps import CallerDep, RuntimeDep, require_pos
from api.errors import ErrorResponse, status_for
from api.runtime import Runtime
from api.schemas import RedemptionIn, RedemptionOut, VoidIn, VoidOut
from core.errors import EngineError, Forbidden, InvalidInput
from offers.domain import CouponUnknown
from offers.idempotency import Answer, IdempotentTill, fingerprint
from offers.lockout import GuessLockout
from offers.redemption import CouponRedeemer

router = APIRouter(
    prefix="/v1/pos",
    tags=["pos"],
    dependencies=[require_pos],
    responses={s: {"model": ErrorResponse} for s in (401, 403, 404, 409, 410, 422, 429)},
)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="any unique string per till request (e.g. a UUID); retries reuse it",
    ),
]
MAX_KEY_LENGTH = 200


def _redeemer(runtime: Runtime, session: Session) -> CouponRedeemer:
    settings = runtime.settings
    return CouponRedeemer(
        session,
        grace=timedelta(seconds=settings.redemption_grace_s),
        void_window=timedelta(minutes=settings.void_window_minutes),
    )


def _answer(run: Callable[[], dict[str, Any]]) -> Answer:
    try:
        return 200, run()
    except EngineError as exc:
        return status_for(exc), {"error": {"code": exc.code, "message": exc.message}}


def _at_till(
    request: Request,
    runtime: RuntimeDep,
    caller: CallerDep,
    store_id: str,
    key: str | None,
    operation: str,
    payload: dict[str, Any],
    action: Callable[[Session], Answer],
) -> JSONResponse:
    if key is not None and not 1 <= len(key.strip()) <= MAX_KEY_LENGTH:
        raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    if not caller.may_act_for(store_id):
        raise Forbidden(f"this terminal's key ({caller.label}) may not act for that store")
    settings, now = runtime.settings, runtime.clock.now()
    terminal = caller.key_id  # the key's visible id, never the key itself
    identities = [f"terminal:{terminal}", f"ip:{request.client.host if request.client else '-'}"]
    lockout = GuessLockout(
        runtime.state, settings.pos_lockout_failures, settings.pos_lockout_window_s
    )
    with lockout.attempt(identities, now) as attempt:
        result = IdempotentTill(runtime.sessions).run(
            terminal=terminal,
            key=key.strip() if key else None,
            print_=fingerprint(operation, payload),
            action=action,
            now=now,
        )
        if not result.replayed and result.body.get("error", {}).get("code") == CouponUnknown.code:
            attempt.failed()
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONResponse(result.body, status_code=result.status, headers=headers)


@router.post(
    "/redemptions",
    response_model=RedemptionOut,
    summary="Redeem a coupon (404 unknown or other store, 409 already redeemed, 410 expired, "
    "429 locked out after repeated failed lookups)",
)
def redeem(
    body: RedemptionIn,
    request: Request,
    runtime: RuntimeDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    def action(session: Session) -> Answer:
        def run() -> dict[str, Any]:
            done = _redeemer(runtime, session).redeem(
                raw_code=body.code, store_id=body.store_id, now=runtime.clock.now()
            )
            return RedemptionOut(
                coupon_id=done.coupon_id,
                code=done.code,
                store_id=done.store_id,
                title=done.title,
                discount_text=done.discount_text,
                redeemed_at=done.redeemed_at,
            ).model_dump(mode="json")

        return _answer(run)

    return _at_till(
        request,
        runtime,
        caller,
        body.store_id,
        idempotency_key,
        "redeem",
        body.model_dump(mode="json"),
        action,
    )


@router.post(
    "/voids",
    response_model=VoidOut,
    summary="Void a redemption made at this store within the void window (409 when there is "
    "none to void); a still-valid coupon can be redeemed again",
)
def void(
    body: VoidIn,
    request: Request,
    runtime: RuntimeDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    def action(session: Session) -> Answer:
        def run() -> dict[str, Any]:
            done = _redeemer(runtime, session).void(
                raw_code=body.code, store_id=body.store_id, now=runtime.clock.now()
            )
            return VoidOut(
                coupon_id=done.coupon_id,
                code=done.code,
                store_id=done.store_id,
                status=done.status,
                expires_at=done.expires_at,
                voided_at=done.voided_at,
            ).model_dump(mode="json")

        return _answer(run)

    return _at_till(
        request,
        runtime,
        caller,
        body.store_id,
        idempotency_key,
        "void",
        body.model_dump(mode="json"),
        action,
    )
