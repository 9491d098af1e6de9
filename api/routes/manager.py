"""Campaign manager: stores with fences, campaigns with an offer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import RuntimeDep, SessionDep, require_manager
from api.errors import ErrorResponse
from api.schemas import (
    BudgetOut,
    CampaignIn,
    CampaignList,
    CampaignOut,
    CampaignRulesIn,
    FenceOut,
    NoticeIn,
    NoticeOut,
    OfferOut,
    Page,
    StoreIn,
    StoreList,
    StoreOut,
)
from consent.service import NoticeRegistry
from core.db import on_commit
from geo.models import Fence, Store
from geo.repository import StoreRepository
from geo.service import FenceSpec, StoreCatalog, StoreSpec
from offers.campaigns import RULE_FIELDS, CampaignCatalog, OfferSpec
from offers.domain import ValidityRule
from offers.models import Campaign, Offer
from offers.repository import CampaignRepository

ERRORS: dict[int | str, dict[str, object]] = {s: {"model": ErrorResponse} for s in (401, 409, 422)}
router = APIRouter(
    prefix="/v1/manager", tags=["manager"], dependencies=[require_manager], responses=ERRORS
)

Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def _store_out(store: Store, fences: list[Fence]) -> StoreOut:
    return StoreOut(
        opening_hours=store.opening_hours,
        id=store.id,
        name=store.name,
        external_id=store.external_id,
        timezone=store.timezone,
        fences=[
            FenceOut(
                id=f.id,
                kind=f.kind,
                lon=f.lon,
                lat=f.lat,
                radius_m=f.radius_m,
                geometry=f.geojson,
                dwell_s=f.dwell_s,
            )
            for f in fences
        ],
    )


def _campaign_out(campaign: Campaign, store_ids: list[str], offers: list[Offer]) -> CampaignOut:
    return CampaignOut(
        id=campaign.id,
        name=campaign.name,
        status=campaign.status,
        starts_at=campaign.starts_at,
        ends_at=campaign.ends_at,
        daily_cap_per_shopper=campaign.daily_cap_per_shopper,
        category=campaign.category,
        active_hours=campaign.active_hours,
        store_cooldown_minutes=campaign.store_cooldown_minutes or 0,
        budget=BudgetOut(
            max_coupons=campaign.max_coupons,
            max_liability=campaign.max_liability,
            issued_count=campaign.issued_count or 0,
            reserved_liability=campaign.reserved_liability or 0,
        )
        if campaign.max_coupons is not None or campaign.max_liability is not None
        else None,
        store_ids=store_ids,
        offers=[
            OfferOut(
                id=o.id,
                title=o.title,
                body=o.body,
                discount_text=o.discount_text,
                valid_minutes=o.valid_minutes,
                validity_rule=o.validity_rule,
                decision_window_minutes=o.decision_window_minutes,
                max_valid_minutes=o.max_valid_minutes,
                discount_amount=o.discount_amount,
            )
            for o in offers
        ],
    )


@router.post(
    "/stores",
    status_code=201,
    response_model=StoreOut,
    summary="Create a store with a circular fence",
)
def create_store(body: StoreIn, session: SessionDep, runtime: RuntimeDep) -> StoreOut:
    fence = FenceSpec(
        lon=body.fence.lon,
        lat=body.fence.lat,
        radius_m=body.fence.radius_m,
        geojson=body.fence.geometry,
        dwell_s=body.fence.dwell_s,
    )
    spec = StoreSpec(
        name=body.name,
        fence=fence,
        external_id=body.external_id,
        timezone=body.timezone,
        opening_hours=body.opening_hours,
    )
    store, fence_row = StoreCatalog(session).create(spec, runtime.clock.now())
    on_commit(session, runtime.fences.announce_change)
    return _store_out(store, [fence_row])


@router.get("/stores", response_model=StoreList, summary="List stores")
def list_stores(session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> StoreList:
    rows, total = StoreRepository(session).page(limit=limit, offset=offset)
    return StoreList(
        items=[_store_out(s, f) for s, f in rows],
        page=Page(total=total, limit=limit, offset=offset),
    )


@router.post(
    "/campaigns",
    status_code=201,
    response_model=CampaignOut,
    summary="Create a campaign with one offer",
)
def create_campaign(body: CampaignIn, session: SessionDep, runtime: RuntimeDep) -> CampaignOut:
    offer = body.offer
    campaign, store_ids, created = CampaignCatalog(session).create(
        name=body.name,
        store_ids=body.store_ids,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        daily_cap_per_shopper=body.daily_cap_per_shopper or 1,
        category=body.category,
        title=offer.title,
        body=offer.body,
        discount_text=offer.discount_text,
        valid_minutes=offer.valid_minutes,
        now=runtime.clock.now(),
        offer_spec=OfferSpec(
            offer.title,
            offer.body,
            offer.discount_text,
            offer.valid_minutes,
            ValidityRule(offer.validity_rule),
            offer.decision_window_minutes,
            offer.max_valid_minutes,
            offer.discount_amount,
        ),
        active_hours=body.active_hours,
        store_cooldown_minutes=body.store_cooldown_minutes or 0,
        max_coupons=body.max_coupons,
        max_liability=body.max_liability,
    )
    return _campaign_out(campaign, store_ids, [created])


@router.patch(
    "/campaigns/{campaign_id}/rules",
    response_model=CampaignOut,
    responses={404: {"model": ErrorResponse}},
    summary="Change a campaign's schedule, caps, cooldown or budget (only the fields given; "
    "null clears an optional one)",
)
def update_campaign_rules(
    campaign_id: str, body: CampaignRulesIn, session: SessionDep, runtime: RuntimeDep
) -> CampaignOut:
    changes = {name: getattr(body, name) for name in body.model_fields_set & RULE_FIELDS}
    if changes.get("daily_cap_per_shopper", 1) is None:
        changes["daily_cap_per_shopper"] = 1
    if changes.get("store_cooldown_minutes", 0) is None:
        changes["store_cooldown_minutes"] = 0
    campaign, store_ids, offers = CampaignCatalog(session).update_rules(
        campaign_id, changes, runtime.clock.now()
    )
    return _campaign_out(campaign, store_ids, offers)


@router.get("/campaigns", response_model=CampaignList, summary="List campaigns")
def list_campaigns(session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> CampaignList:
    rows, total = CampaignRepository(session).page(limit=limit, offset=offset)
    return CampaignList(
        items=[_campaign_out(c, s, o) for c, s, o in rows],
        page=Page(total=total, limit=limit, offset=offset),
    )


@router.post(
    "/notices",
    status_code=201,
    response_model=NoticeOut,
    summary="Publish a consent notice version (immutable once published)",
)
def publish_notice(body: NoticeIn, session: SessionDep, runtime: RuntimeDep) -> NoticeOut:
    notice = NoticeRegistry(session).publish(
        purpose=body.purpose,
        version=body.version,
        language=body.language,
        text=body.text,
        now=runtime.clock.now(),
    )
    return NoticeOut.model_validate(notice, from_attributes=True)
