"""SQL access for campaigns, offers, coupons and deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import String, and_, cast, func, or_, select, update
from sqlalchemy.orm import Session

from offers.domain import CouponStatus, DeliveryStatus
from offers.models import Campaign, CampaignStore, Coupon, Delivery, Offer


class CampaignRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, campaign: Campaign, store_ids: Sequence[str], offer: Offer) -> None:
        self.session.add(campaign)
        self.session.flush()
        self.session.add_all(
            [CampaignStore(campaign_id=campaign.id, store_id=s) for s in store_ids]
        )
        self.session.add(offer)
        self.session.flush()

    def page(
        self,
        *,
        limit: int,
        offset: int,
        status: str | None = None,
        q: str | None = None,
        store_id: str | None = None,
        category: str | None = None,
        tag: str | None = None,
    ) -> tuple[list[tuple[Campaign, list[str], list[Offer]]], int]:
        where = []
        if status:
            where.append(Campaign.status == status)
        if q:
            where.append(func.lower(Campaign.name).contains(q.lower(), autoescape=True))
        if category:
            where.append(Campaign.category == category)
        if tag:
            where.append(cast(Campaign.store_tags, String).contains(f'"{tag}"', autoescape=True))
        if store_id:
            where.append(
                Campaign.id.in_(
                    select(CampaignStore.campaign_id).where(CampaignStore.store_id == store_id)
                )
            )
        campaigns = list(
            self.session.scalars(
                select(Campaign)
                .where(*where)
                .order_by(Campaign.created_at, Campaign.id)
                .limit(limit)
                .offset(offset)
            )
        )
        total = self.session.scalar(select(func.count()).select_from(Campaign).where(*where)) or 0
        ids = [c.id for c in campaigns]
        stores: dict[str, list[str]] = {i: [] for i in ids}
        offers: dict[str, list[Offer]] = {i: [] for i in ids}
        if ids:
            for link in self.session.scalars(
                select(CampaignStore).where(CampaignStore.campaign_id.in_(ids))
            ):
                stores[link.campaign_id].append(link.store_id)
            for offer in self.session.scalars(
                select(Offer)
                .where(Offer.campaign_id.in_(ids))
                .order_by(Offer.created_at, Offer.name)
            ):
                offers[offer.campaign_id].append(offer)
        return [(c, stores[c.id], offers[c.id]) for c in campaigns], total

    def campaigns_for_store(
        self, store_id: str, store_tags: Sequence[str]
    ) -> list[tuple[Campaign, list[Offer]]]:
        """Active campaigns that target the store by id or by one of its tags, with their
        variants (oldest campaign first)."""
        linked = set(
            self.session.scalars(
                select(CampaignStore.campaign_id).where(CampaignStore.store_id == store_id)
            )
        )
        tags = set(store_tags)
        query = select(Campaign).where(Campaign.status == "active")
        if not tags:  # an untagged store: only campaigns that name it
            query = query.where(Campaign.id.in_(list(linked)))
        campaigns = [
            c
            for c in self.session.scalars(query.order_by(Campaign.created_at, Campaign.id))
            if c.id in linked or tags.intersection(c.store_tags or [])
        ]
        if not campaigns:
            return []
        offers: dict[str, list[Offer]] = {c.id: [] for c in campaigns}
        for offer in self.session.scalars(
            select(Offer)
            .where(Offer.campaign_id.in_(list(offers)))
            .order_by(Offer.created_at, Offer.name)
        ):
            offers[offer.campaign_id].append(offer)
        return [(c, offers[c.id]) for c in campaigns if offers[c.id]]


class CouponRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def by_code(self, code: str) -> Coupon | None:
        return self.session.scalar(select(Coupon).where(Coupon.code == code))

    def redeem(self, *, code: str, store_id: str, now: datetime) -> bool:
        """The one conditional transition issued -> redeemed; True only for the single winner."""
        result = self.session.execute(
            update(Coupon)
            .where(
                Coupon.code == code,
                Coupon.store_id == store_id,
                Coupon.status == CouponStatus.ISSUED.value,
                Coupon.expires_at > now,
            )
            .values(status=CouponStatus.REDEEMED.value, redeemed_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def live_for_subject(self, subject_id: str, now: datetime) -> list[Coupon]:
        return list(
            self.session.scalars(
                select(Coupon)
                .where(
                    Coupon.subject_id == subject_id,
                    Coupon.status == CouponStatus.ISSUED.value,
                    Coupon.expires_at > now,
                )
                .order_by(Coupon.expires_at)
            )
        )


class DeliveryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def claim(self, delivery_id: str, now: datetime, lease_until: datetime) -> bool:
        """Atomically take a due delivery (pending, or sending with a lapsed lease)."""
        result = self.session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                or_(
                    Delivery.status == DeliveryStatus.PENDING.value,
                    and_(
                        Delivery.status == DeliveryStatus.SENDING.value,
                        Delivery.claimed_until < now,
                    ),
                ),
            )
            .values(
                status=DeliveryStatus.SENDING.value,
                claimed_until=lease_until,
                attempts=Delivery.attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def unfinished(self) -> list[tuple[str, datetime]]:
        rows = self.session.execute(
            select(Delivery.id, Delivery.due_at).where(
                Delivery.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value])
            )
        )
        return [(r.id, r.due_at) for r in rows]
