"""Campaign catalogue: validated creation, listing and rule changes of campaigns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.ids import new_id
from geo.hours import validate_hours
from geo.repository import StoreRepository
from offers.domain import (
    MAX_VALID_MINUTES,
    CampaignNotFound,
    InvalidCampaign,
    Validity,
    ValidityRule,
    check_validity,
)
from offers.models import Campaign, Offer
from offers.repository import CampaignBudget, CampaignRepository

# Campaign fields a manager may change on a running campaign (``update_rules``).
RULE_FIELDS = frozenset(
    {
        "starts_at",
        "ends_at",
        "active_hours",
        "daily_cap_per_shopper",
        "store_cooldown_minutes",
        "max_coupons",
        "max_liability",
    }
)


@dataclass(frozen=True, slots=True)
class OfferSpec:
    title: str
    body: str
    discount_text: str
    valid_minutes: int
    validity_rule: ValidityRule = ValidityRule.FIXED
    decision_window_minutes: int | None = None
    max_valid_minutes: int | None = None
    discount_amount: int = 0


def _check_rules(campaign: Campaign, discount_amount: int) -> None:
    if (
        campaign.starts_at is not None
        and campaign.ends_at is not None
        and campaign.ends_at <= campaign.starts_at
    ):
        raise InvalidCampaign("ends_at must be after starts_at")
    campaign.active_hours = validate_hours(campaign.active_hours)
    if campaign.max_liability is not None and discount_amount <= 0:
        raise InvalidCampaign(
            "a max_liability budget needs the offer's discount_amount (minor currency units)"
        )


class CampaignCatalog:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.repository = CampaignRepository(session)

    def create(
        self,
        *,
        name: str,
        store_ids: Sequence[str],
        starts_at: datetime | None,
        ends_at: datetime | None,
        daily_cap_per_shopper: int,
        title: str,
        body: str,
        discount_text: str,
        valid_minutes: int,
        now: datetime,
        category: str | None = None,
        offer_spec: OfferSpec | None = None,
        active_hours: dict[str, Any] | None = None,
        store_cooldown_minutes: int = 0,
        max_coupons: int | None = None,
        max_liability: int | None = None,
    ) -> tuple[Campaign, list[str], Offer]:
        spec = offer_spec or OfferSpec(title, body, discount_text, valid_minutes)
        unique_stores = list(dict.fromkeys(store_ids))
        if not unique_stores:
            raise InvalidCampaign("a campaign needs at least one store")
        missing = set(unique_stores) - StoreRepository(self.session).existing_ids(unique_stores)
        if missing:
            raise InvalidCampaign(f"unknown store id(s): {', '.join(sorted(missing))}")
        if not 1 <= spec.valid_minutes <= MAX_VALID_MINUTES:
            raise InvalidCampaign(f"valid_minutes must be between 1 and {MAX_VALID_MINUTES}")
        check_validity(
            Validity(
                spec.validity_rule,
                spec.valid_minutes,
                spec.decision_window_minutes,
                spec.max_valid_minutes,
            )
        )
        campaign = Campaign(
            id=new_id("cmp"),
            name=name,
            status="active",
            starts_at=starts_at,
            ends_at=ends_at,
            daily_cap_per_shopper=daily_cap_per_shopper,
            category=category,
            active_hours=active_hours,
            store_cooldown_minutes=store_cooldown_minutes,
            max_coupons=max_coupons,
            max_liability=max_liability,
            issued_count=0,
            reserved_liability=0,
            created_at=now,
        )
        _check_rules(campaign, spec.discount_amount)
        offer = Offer(
            id=new_id("ofr"),
            campaign_id=campaign.id,
            title=spec.title,
            body=spec.body,
            discount_text=spec.discount_text,
            valid_minutes=spec.valid_minutes,
            validity_rule=spec.validity_rule.value,
            decision_window_minutes=spec.decision_window_minutes,
            max_valid_minutes=spec.max_valid_minutes,
            discount_amount=spec.discount_amount,
            created_at=now,
        )
        self.repository.add(campaign, unique_stores, offer)
        return campaign, unique_stores, offer

    def update_rules(
        self, campaign_id: str, changes: Mapping[str, Any], now: datetime
    ) -> tuple[Campaign, list[str], list[Offer]]:
        """Change a campaign's schedule, caps, cooldown or budget. Setting a budget on a running
        campaign counts the coupons it already issued (and the liability of those not expired)."""
        unknown = set(changes) - RULE_FIELDS
        if unknown:
            raise InvalidCampaign(f"not a campaign rule: {', '.join(sorted(unknown))}")
        found = self.repository.with_details(campaign_id)
        if found is None:
            raise CampaignNotFound(f"no campaign with id {campaign_id}")
        campaign, stores, offers = found
        had_budget = campaign.max_coupons is not None or campaign.max_liability is not None
        for name, value in changes.items():
            setattr(campaign, name, value)
        _check_rules(campaign, max((o.discount_amount for o in offers), default=0))
        self.session.flush()
        has_budget = campaign.max_coupons is not None or campaign.max_liability is not None
        if has_budget and not had_budget:
            CampaignBudget(self.session).recount(campaign.id, now)
            self.session.refresh(campaign)
        return campaign, stores, offers
