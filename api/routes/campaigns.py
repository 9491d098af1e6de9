"""Campaign manager: campaigns, their offer variants, pause and resume (all audited)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ActorDep, RuntimeDep, SessionDep, require_manager
from api.errors import ErrorResponse
from api.schemas import (
    BudgetOut,
    CampaignIn,
    CampaignList,
    CampaignOut,
    CampaignPatch,
    CampaignRulesIn,
    OfferOut,
    Page,
    VariantIn,
    VariantPatch,
)
from offers.campaigns import RULE_FIELDS, CampaignCatalog, CampaignSpec, VariantSpec
from offers.models import Campaign, Offer
from offers.repository import CampaignRepository

ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": ErrorResponse} for s in (401, 404, 409, 422)
}
router = APIRouter(
    prefix="/v1/manager", tags=["manager"], dependencies=[require_manager], responses=ERRORS
)

Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def offer_out(o: Offer) -> OfferOut:
    return OfferOut(
        id=o.id,
        title=o.title,
        body=o.body,
        discount_text=o.discount_text,
        valid_minutes=o.valid_minutes,
        validity_rule=o.validity_rule,
        decision_window_minutes=o.decision_window_minutes,
        max_valid_minutes=o.max_valid_minutes,
        discount_amount=o.discount_amount,
        name=o.name,
        weight=o.weight,
        active=o.active,
    )


def campaign_out(campaign: Campaign, store_ids: list[str], offers: list[Offer]) -> CampaignOut:
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
        store_tags=list(campaign.store_tags or []),
        triggers=list(campaign.triggers or ["enter"]),
        holdout_share=campaign.holdout_share,
        selection=campaign.selection,
        visit_window_minutes=campaign.visit_window_minutes,
        offers=[offer_out(o) for o in offers],
    )


def _full(catalog: CampaignCatalog, campaign: Campaign) -> CampaignOut:
    return campaign_out(campaign, catalog.store_ids(campaign.id), catalog.variants(campaign.id))


@router.post(
    "/campaigns",
    status_code=201,
    response_model=CampaignOut,
    summary="Create a campaign with one offer or A/B variants",
)
def create_campaign(
    body: CampaignIn, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> CampaignOut:
    settings = runtime.settings
    variants = body.variants or [VariantIn(**body.offer.model_dump())]  # type: ignore[union-attr]
    spec = CampaignSpec(
        name=body.name,
        variants=[VariantSpec(**v.model_dump()) for v in variants],
        store_ids=body.store_ids,
        store_tags=body.store_tags,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        daily_cap_per_shopper=body.daily_cap_per_shopper or 1,
        category=body.category,
        triggers=body.triggers,
        active_hours=body.active_hours,
        store_cooldown_minutes=body.store_cooldown_minutes or 0,
        max_coupons=body.max_coupons,
        max_liability=body.max_liability,
        holdout_share=(
            settings.default_holdout_share if body.holdout_share is None else body.holdout_share
        ),
        selection=body.selection,
        visit_window_minutes=body.visit_window_minutes or settings.default_visit_window_minutes,
    )
    catalog = CampaignCatalog(session, actor)
    return _full(catalog, catalog.create(spec, runtime.clock.now()))


@router.get("/campaigns", response_model=CampaignList, summary="List campaigns (filterable)")
def list_campaigns(
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    status: Annotated[str | None, Query(pattern="^(active|paused)$")] = None,
    q: Annotated[str | None, Query(max_length=200, description="name contains")] = None,
    store_id: Annotated[str | None, Query(max_length=40)] = None,
    category: Annotated[str | None, Query(max_length=60)] = None,
    tag: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=40)] = None,
) -> CampaignList:
    rows, total = CampaignRepository(session).page(
        limit=limit,
        offset=offset,
        status=status,
        q=q,
        store_id=store_id,
        category=category,
        tag=tag,
    )
    return CampaignList(
        items=[campaign_out(c, s, o) for c, s, o in rows],
        page=Page(total=total, limit=limit, offset=offset),
    )


@router.patch(
    "/campaigns/{campaign_id}/rules",
    response_model=CampaignOut,
    summary="Change a campaign's schedule, caps, cooldown or budget (only the fields given; "
    "null clears an optional one)",
)
def update_campaign_rules(
    campaign_id: str,
    body: CampaignRulesIn,
    session: SessionDep,
    runtime: RuntimeDep,
    actor: ActorDep,
) -> CampaignOut:
    changes = {name: getattr(body, name) for name in body.model_fields_set & RULE_FIELDS}
    if changes.get("daily_cap_per_shopper", 1) is None:
        changes["daily_cap_per_shopper"] = 1
    if changes.get("store_cooldown_minutes", 0) is None:
        changes["store_cooldown_minutes"] = 0
    catalog = CampaignCatalog(session, actor)
    return _full(catalog, catalog.update_rules(campaign_id, changes, runtime.clock.now()))


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut, summary="One campaign")
def get_campaign(campaign_id: str, session: SessionDep) -> CampaignOut:
    catalog = CampaignCatalog(session)
    return _full(catalog, catalog.get(campaign_id))


@router.patch("/campaigns/{campaign_id}", response_model=CampaignOut, summary="Change a campaign")
def update_campaign(
    campaign_id: str, body: CampaignPatch, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> CampaignOut:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    catalog = CampaignCatalog(session, actor)
    return _full(catalog, catalog.update(campaign_id, changes, runtime.clock.now()))


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignOut, summary="Pause")
def pause_campaign(
    campaign_id: str, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> CampaignOut:
    catalog = CampaignCatalog(session, actor)
    return _full(catalog, catalog.update(campaign_id, {"status": "paused"}, runtime.clock.now()))


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignOut, summary="Resume")
def resume_campaign(
    campaign_id: str, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> CampaignOut:
    catalog = CampaignCatalog(session, actor)
    return _full(catalog, catalog.update(campaign_id, {"status": "active"}, runtime.clock.now()))


@router.post(
    "/campaigns/{campaign_id}/variants",
    status_code=201,
    response_model=OfferOut,
    summary="Add an offer variant",
)
def add_variant(
    campaign_id: str, body: VariantIn, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> OfferOut:
    offer = CampaignCatalog(session, actor).add_variant(
        campaign_id, VariantSpec(**body.model_dump()), runtime.clock.now()
    )
    return offer_out(offer)


@router.patch(
    "/campaigns/{campaign_id}/variants/{offer_id}",
    response_model=OfferOut,
    summary="Change a variant (weight, texts, active)",
)
def update_variant(
    campaign_id: str,
    offer_id: str,
    body: VariantPatch,
    session: SessionDep,
    runtime: RuntimeDep,
    actor: ActorDep,
) -> OfferOut:
    offer = CampaignCatalog(session, actor).update_variant(
        campaign_id, offer_id, body.model_dump(exclude_unset=True), runtime.clock.now()
    )
    return offer_out(offer)
