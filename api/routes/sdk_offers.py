"""Mobile SDK: the shopper's offers inbox, the opened callback, "why did I get this offer?", the
nearest fences to monitor on the device, and a download of the shopper's own data.

Every route reads the device from its token and answers only about that device's subject. A
coupon id of another shopper gets the same 404 body as an id that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.deps import DeviceDep, RuntimeDep, SessionDep
from api.errors import ErrorResponse
from api.schemas_sdk import (
    ConsentReliedOn,
    InboxCouponOut,
    NearFenceOut,
    NearFencesOut,
    OpenedOut,
    ReceiptOut,
    TriggerOut,
    WhyOut,
)
from api.subject_export import subject_export
from consent.domain import ConsentRequired, Purpose
from consent.gate import ConsentGate
from consent.models import Subject
from core.audit import audit
from core.errors import InvalidInput, NotFound
from geo.nearest import OS_REGION_LIMITS, nearest_fences
from offers.domain import format_code, remaining_seconds
from offers.inbox import OfferExplanation, ShopperOffers, trigger_details

router = APIRouter(
    prefix="/v1/sdk",
    tags=["sdk"],
    responses={s: {"model": ErrorResponse} for s in (401, 403, 404, 422, 503)},
)


@router.get(
    "/offers",
    response_model=list[InboxCouponOut],
    summary="The offers inbox: live coupons of the device owner, soonest expiry first",
    description="Only coupons still redeemable. `remaining_s` is counted at the answer; count "
    "down locally from it and drop the coupon at zero even while offline.",
)
def offers_inbox(
    device: DeviceDep, session: SessionDep, runtime: RuntimeDep
) -> list[InboxCouponOut]:
    now = runtime.clock.now()
    stores = runtime.fences.current().stores
    out = []
    for item in ShopperOffers(session).live(device.subject_id, now):
        coupon, offer = item.coupon, item.offer
        store = stores.get(coupon.store_id)
        out.append(
            InboxCouponOut(
                coupon_id=coupon.id,
                code=format_code(coupon.code),
                title=offer.title,
                body=offer.body,
                discount_text=offer.discount_text,
                store_id=coupon.store_id,
                store_name=store.name if store else None,
                issued_at=coupon.issued_at,
                expires_at=coupon.expires_at,
                remaining_s=remaining_seconds(coupon.expires_at, now),
                opened_at=coupon.opened_at,
            )
        )
    return out


@router.post(
    "/offers/{coupon_id}/opened",
    response_model=OpenedOut,
    summary="The shopper opened this offer in the app (idempotent)",
    description="Records the first open for the offer funnel; calling again (a retry, a second "
    "open) changes nothing and answers the first time. Also accepted after the coupon expired "
    "(`status: expired`), so a late tap on a notification still counts as opened.",
)
def offer_opened(
    coupon_id: str, device: DeviceDep, session: SessionDep, runtime: RuntimeDep
) -> OpenedOut:
    opened = ShopperOffers(session).mark_opened(device.subject_id, coupon_id, runtime.clock.now())
    return OpenedOut(
        coupon_id=opened.coupon_id,
        opened_at=opened.opened_at,
        first_open=opened.first_open,
        status=opened.status,
    )


def _explain(why: OfferExplanation) -> str:
    store = why.store.name if why.store else "a store"
    parts = []
    if why.trigger is not None:
        verb = {"enter": "entered", "dwell": "stayed at", "approaching": "were heading for"}
        parts.append(
            f"You {verb.get(why.trigger.kind, why.trigger.kind)} {store} at "
            f"{why.trigger.occurred_at:%Y-%m-%d %H:%M} UTC"
        )
    else:
        parts.append(f"You were near {store}")
    parts.append(f"and the campaign '{why.campaign.name}' runs there.")
    if why.consent is not None:
        channel = f" by {why.consent.channel}" if why.consent.channel else ""
        parts.append(
            f"You agreed to receive offers{channel} on {why.consent.occurred_at:%Y-%m-%d} "
            f"(notice version {why.consent.notice_version}); withdraw it in the app at any time."
        )
    return " ".join(parts)


@router.get(
    "/offers/{coupon_id}/why",
    response_model=WhyOut,
    summary="Why did I get this offer? The trigger, the store, the time, the consent used",
)
def why_this_offer(
    coupon_id: str, device: DeviceDep, session: SessionDep, runtime: RuntimeDep
) -> WhyOut:
    why = ShopperOffers(session).explain(device.subject_id, coupon_id)
    coupon, trigger, consent, receipt = why.coupon, why.trigger, why.consent, why.receipt
    return WhyOut(
        coupon_id=coupon.id,
        campaign=why.campaign.name,
        title=why.offer.title,
        store_id=coupon.store_id,
        store_name=why.store.name if why.store else None,
        issued_at=coupon.issued_at,
        expires_at=coupon.expires_at,
        trigger=None
        if trigger is None
        else TriggerOut(
            event_id=trigger.id,
            kind=trigger.kind,
            occurred_at=trigger.occurred_at,
            fence_id=trigger.fence_id,
            details=trigger_details(trigger),
        ),
        consent=None
        if consent is None
        else ConsentReliedOn(
            event_id=consent.id,
            purpose=consent.purpose,
            channel=consent.channel or None,
            state=consent.state,
            notice_version=consent.notice_version,
            occurred_at=consent.occurred_at,
            entry_hash=consent.entry_hash,
        ),
        receipt=None
        if receipt is None
        else ReceiptOut(
            decided_at=receipt.decided_at,
            allowed=receipt.allowed,
            reason=receipt.reason,
            event_hash=receipt.event_hash,
        ),
        explanation=_explain(why),
    )


@router.get(
    "/fences/nearest",
    response_model=NearFencesOut,
    summary="The nearest fences to monitor on the device (iOS up to 20, Android up to 100)",
    description="Send the device's position; the answer lists the nearest fences as circles the "
    "OS can monitor (a polygon as its enclosing circle), nearest first. Needs current "
    "`location_tracking` consent (403 otherwise); the position is not stored. Register them "
    "with the OS region monitoring and ask again once the device has moved `resync_radius_m` "
    "from this position.",
)
def nearest(
    device: DeviceDep,
    session: SessionDep,
    runtime: RuntimeDep,
    lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False)],
    lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False)],
    platform: Annotated[
        str | None, Query(description="ios, android or web; default: the registered one")
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, description="default and maximum: the platform's limit")
    ] = None,
) -> NearFencesOut:
    now = runtime.clock.now()
    platform = platform or device.platform
    if platform not in OS_REGION_LIMITS:
        raise InvalidInput(f"platform must be one of {', '.join(sorted(OS_REGION_LIMITS))}")
    cap = OS_REGION_LIMITS[platform]
    if limit is not None and limit > cap:
        raise InvalidInput(f"{platform} monitors at most {cap} regions per app; ask for {cap}")
    k = limit or cap
    gate = ConsentGate(session, runtime.state)
    consent = gate.check(device.subject_id, Purpose.LOCATION_TRACKING, None, now)
    gate.receipt(
        device.subject_id, "fence_sync", consent, now, details={"device_id": device.id, "k": k}
    )
    if not consent.allowed:
        session.commit()  # keep the refusal's receipt
        raise ConsentRequired(consent.reason)
    snapshot = runtime.fences.current()
    found = nearest_fences(snapshot.index, lon, lat, k)
    fences = [
        NearFenceOut(
            fence_id=f.fence_id,
            store_id=f.store_id,
            store_name=s.name if (s := snapshot.stores.get(f.store_id)) else None,
            kind="circle" if f.kind == "circle" else "polygon",
            lon=f.lon,
            lat=f.lat,
            radius_m=f.radius_m,
            distance_m=f.distance_m,
        )
        for f in found
    ]
    resync = fences[-1].distance_m if len(fences) == k and fences else None
    return NearFencesOut(platform=platform, limit=k, fences=fences, resync_radius_m=resync)


@router.get(
    "/me/data",
    summary="Download everything the engine holds about the device owner, as JSON",
    description="Consents (every ledger entry with the notice version shown, and the current "
    "state), decision receipts, offers (coupons), deliveries, fence events, pings still held, "
    "preferences and devices. The same document a compliance export gives; the download is "
    "recorded in the audit log.",
)
def my_data(
    request: Request, device: DeviceDep, session: SessionDep, runtime: RuntimeDep
) -> dict[str, Any]:
    subject = session.get(Subject, device.subject_id)
    if subject is None:
        raise NotFound("no data for this device")
    now = runtime.clock.now()
    audit(
        session,
        actor=f"sdk:{device.id}",
        action="subject.self_export",
        at=now,
        target=subject.id,
        details={"client": request.client.host if request.client else None},
    )
    return subject_export(session, runtime.ledger_config.sealer, subject, now)
