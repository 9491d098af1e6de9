"""Campaign manager: stores with fences, campaigns with an offer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import RuntimeDep, SessionDep, require_manager
from api.errors import ErrorResponse
from api.schemas import (
    CampaignIn,
    CampaignList,
    CampaignOut,
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
from offers.campaigns import CampaignCatalog
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
        store_ids=store_ids,
        offers=[
            OfferOut(
                id=o.id,
                title=o.title,
                body=o.body,
                discount_text=o.discount_text,
                valid_minutes=o.valid_minutes,
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
    campaign, store_ids, offer = CampaignCatalog(session).create(
        name=body.name,
        store_ids=body.store_ids,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        daily_cap_per_shopper=body.daily_cap_per_shopper,
        category=body.category,
        title=body.offer.title,
        body=body.offer.body,
        discount_text=body.offer.discount_text,
        valid_minutes=body.offer.valid_minutes,
        now=runtime.clock.now(),
    )
    return _campaign_out(campaign, store_ids, [offer])


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
