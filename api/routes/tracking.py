"""Outcomes reported from outside: a purchase at the till, a coupon opened from a tracked link."""

from __future__ import annotations

import hashlib
import hmac
import html
from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from api.deps import RuntimeDep, SessionDep, require_pos
from api.errors import ErrorResponse
from api.schemas import AwareDatetime, Strict
from consent.models import Subject
from core.errors import NotFound
from offers.decisions import DecisionLog
from offers.domain import format_code
from offers.funnel_queries import FunnelQueries
from offers.models import Coupon, Offer

pos_router = APIRouter(
    prefix="/v1/pos",
    tags=["pos"],
    dependencies=[require_pos],
    responses={s: {"model": ErrorResponse} for s in (401, 404, 422)},
)
link_router = APIRouter(tags=["sdk"])


class PurchaseIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_ref": "app-user-5f3a9c",
                    "store_id": "st_68313f0e591961edd2c8eb14c1168a86",
                    "occurred_at": "2026-11-23T12:40:00Z",
                }
            ]
        }
    )

    customer_ref: str = Field(
        min_length=1, max_length=200, description="the shopper's id as the app registered it"
    )
    store_id: str = Field(min_length=1, max_length=40)
    occurred_at: AwareDatetime | None = Field(default=None, description="default: now")


class PurchaseOut(BaseModel):
    attributed: int = Field(description="open triggers (treated or held out) it counts for")


@pos_router.post(
    "/purchases",
    response_model=PurchaseOut,
    summary="Report a purchase by a shopper (counts for lift, treated and held out alike)",
)
def report_purchase(body: PurchaseIn, session: SessionDep, runtime: RuntimeDep) -> PurchaseOut:
    subject = session.scalar(select(Subject).where(Subject.external_ref == body.customer_ref))
    if subject is None or subject.erased_at is not None:
        raise NotFound("no shopper with this customer_ref")
    at = body.occurred_at or runtime.clock.now()
    return PurchaseOut(
        attributed=DecisionLog(session).record_purchase(subject.id, body.store_id, at)
    )


def open_token(secret: str, coupon_id: str) -> str:
    mac = hmac.new(secret.encode(), f"open:{coupon_id}".encode(), hashlib.sha256).hexdigest()
    return f"{coupon_id}.{mac[:24]}"


def open_url(base_url: str, secret: str, coupon_id: str) -> str:
    """The tracked link to put in a message: opening it records the coupon as opened."""
    return f"{base_url.rstrip('/')}/o/{open_token(secret, coupon_id)}"


@link_router.get(
    "/o/{token}",
    response_class=HTMLResponse,
    summary="Tracked link: shows the coupon and records its first opening",
    responses={404: {"model": ErrorResponse}},
)
def open_coupon(token: str, session: SessionDep, runtime: RuntimeDep) -> HTMLResponse:
    coupon_id, _, _ = token.partition(".")
    secret = runtime.settings.secret_key.get_secret_value()
    if not hmac.compare_digest(token.encode(), open_token(secret, coupon_id).encode()):
        raise NotFound("unknown link")
    now: datetime = runtime.clock.now()
    if not FunnelQueries(session).record_open(coupon_id, now, "link"):
        raise NotFound("unknown link")
    coupon = session.get(Coupon, coupon_id)
    offer = session.get(Offer, coupon.offer_id) if coupon else None
    assert coupon is not None and offer is not None
    live = coupon.status == "issued" and coupon.expires_at > now
    state = f"valid until {coupon.expires_at:%H:%M} UTC" if live else "no longer valid"
    page = (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(offer.discount_text)}</title>"
        f"<main><h1>{html.escape(offer.discount_text)}</h1>"
        f"<p>Code <strong>{format_code(coupon.code)}</strong>, {state}.</p></main></html>"
    )
    return HTMLResponse(
        page, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )
