"""``GET /c/{code}``: the public live countdown page the offer email links to.

No credential: the code in the link is what the shopper shows at the till anyway. The page
shows the offer, the store, the code and the time left (counted down in the browser from the
server's ``expires_at``); nothing about the shopper. ``Accept: application/json`` gets the same
facts as JSON. An unknown code is a 404 with the standard error body.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api.deps import RuntimeDep, SessionDep
from api.errors import ErrorResponse
from geo.models import Store
from offers.domain import CouponUnknown, format_code, normalise_code, remaining_seconds
from offers.models import Coupon, Offer
from offers.repository import CouponRepository

router = APIRouter(tags=["consent"], responses={404: {"model": ErrorResponse}})

Code = Annotated[str, Path(min_length=4, max_length=40, description="the coupon code")]


def _facts(session: Any, code: str, now: datetime) -> dict[str, Any]:
    coupon: Coupon | None = CouponRepository(session).by_code(normalise_code(code))
    if coupon is None:
        raise CouponUnknown("no coupon with this code")
    offer = session.get(Offer, coupon.offer_id)
    store = session.get(Store, coupon.store_id)
    left = remaining_seconds(coupon.expires_at, now)
    status = coupon.status if left > 0 or coupon.status != "issued" else "expired"
    return {
        "code": format_code(coupon.code),
        "title": offer.title if offer else "",
        "discount_text": offer.discount_text if offer else "",
        "store_name": store.name if store else "",
        "status": status,
        "expires_at": coupon.expires_at.isoformat(),
        "remaining_s": left if status == "issued" else 0,
    }


@router.get(
    "/c/{code}",
    summary="Live countdown page of a coupon (public, no personal data)",
    response_class=HTMLResponse,
)
def countdown(code: Code, request: Request, runtime: RuntimeDep, session: SessionDep) -> Response:
    facts = _facts(session, code, runtime.clock.now())
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(facts, headers={"Cache-Control": "no-store"})
    e = {k: escape(str(v)) for k, v in facts.items()}
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{e["title"]}</title></head>
<body style="font-family:sans-serif;text-align:center">
<h1>{e["title"]}</h1><p><strong>{e["discount_text"]}</strong> at {e["store_name"]}</p>
<p>Code: <code style="font-size:2em">{e["code"]}</code></p>
<p id="left" data-remaining="{e["remaining_s"]}" data-status="{e["status"]}">
{e["remaining_s"]} s left</p><p>Valid until {e["expires_at"]}</p>
<script>
const el = document.getElementById("left");
const end = Date.now() + 1000 * Number(el.dataset.remaining);
function tick() {{
  const s = Math.max(0, Math.round((end - Date.now()) / 1000));
  el.textContent = el.dataset.status !== "issued" ? "This coupon is " + el.dataset.status
    : s > 0 ? Math.floor(s / 60) + " min " + (s % 60) + " s left" : "Expired";
  if (s > 0 && el.dataset.status === "issued") setTimeout(tick, 1000);
}}
tick();
</script></body></html>"""
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})
