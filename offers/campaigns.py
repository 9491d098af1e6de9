"""Campaign catalogue: validated creation and listing of campaigns with their offer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from core.ids import new_id
from geo.repository import StoreRepository
from offers.domain import MAX_VALID_MINUTES, InvalidCampaign
from offers.models import Campaign, Offer
from offers.repository import CampaignRepository


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
    ) -> tuple[Campaign, list[str], Offer]:
        unique_stores = list(dict.fromkeys(store_ids))
        if not unique_stores:
            raise InvalidCampaign("a campaign needs at least one store")
        missing = set(unique_stores) - StoreRepository(self.session).existing_ids(unique_stores)
        if missing:
            raise InvalidCampaign(f"unknown store id(s): {', '.join(sorted(missing))}")
        if starts_at is not None and ends_at is not None and ends_at <= starts_at:
            raise InvalidCampaign("ends_at must be after starts_at")
        if not 1 <= valid_minutes <= MAX_VALID_MINUTES:
            raise InvalidCampaign(f"valid_minutes must be between 1 and {MAX_VALID_MINUTES}")
        campaign = Campaign(
            id=new_id("cmp"),
            name=name,
            status="active",
            starts_at=starts_at,
            ends_at=ends_at,
            daily_cap_per_shopper=daily_cap_per_shopper,
            category=category,
            created_at=now,
        )
        offer = Offer(
            id=new_id("ofr"),
            campaign_id=campaign.id,
            title=title,
            body=body,
            discount_text=discount_text,
            valid_minutes=valid_minutes,
            created_at=now,
        )
        self.repository.add(campaign, unique_stores, offer)
        return campaign, unique_stores, offer
