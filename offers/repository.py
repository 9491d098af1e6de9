"""SQL access for campaigns, offers, coupons and deliveries."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import String, and_, cast, exists, func, or_, select, update
from sqlalchemy.orm import Session

from consent.models import Device
from geo.models import Store
from offers.domain import CouponStatus, DeliveryStatus, Refusal
from offers.models import Campaign, CampaignStore, Coupon, Delivery, Offer, SchedulerLease

# An UPDATE of campaigns that moves only their budget counters, never what offer decisions read
# from a campaign (``offers.live_campaigns`` keeps that in memory and reloads it after any other
# change).
COUNTERS_ONLY = {"campaign_counters_only": True}


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
        return self._with_details(campaigns), total

    def live(self) -> list[tuple[Campaign, list[str], list[Offer]]]:
        """Every active campaign with its stores and variants, oldest first (what offer
        decisions choose from; ``offers.live_campaigns`` keeps it in memory)."""
        campaigns = self.session.scalars(
            select(Campaign)
            .where(Campaign.status == "active")
            .order_by(Campaign.created_at, Campaign.id)
        )
        return self._with_details(list(campaigns))

    def _with_details(
        self, campaigns: list[Campaign]
    ) -> list[tuple[Campaign, list[str], list[Offer]]]:
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
        return [(c, stores[c.id], offers[c.id]) for c in campaigns]

    def with_details(self, campaign_id: str) -> tuple[Campaign, list[str], list[Offer]] | None:
        campaign = self.session.get(Campaign, campaign_id)
        if campaign is None:
            return None
        stores = list(
            self.session.scalars(
                select(CampaignStore.store_id).where(CampaignStore.campaign_id == campaign_id)
            )
        )
        offers = list(self.session.scalars(select(Offer).where(Offer.campaign_id == campaign_id)))
        return campaign, stores, offers


def campaigns_reaching(
    stores: Mapping[str, Sequence[str]],
    campaigns: Iterable[tuple[Campaign, Collection[str], Sequence[Offer]]],
) -> dict[str, list[tuple[Campaign, list[Offer]]]]:
    """For each store (id -> its tags): the campaigns, in the order given, that name it or
    one of its tags and have at least one variant, each with its variants. ``campaigns``:
    (campaign, ids of the stores it names, its variants)."""
    found: dict[str, list[tuple[Campaign, list[Offer]]]] = {s: [] for s in stores}
    for campaign, named, offers in campaigns:
        if not offers:
            continue
        wanted = set(campaign.store_tags or [])
        for store_id, tags in stores.items():
            if store_id in named or wanted.intersection(tags):
                found[store_id].append((campaign, list(offers)))
    return found


class CampaignBudget:
    """A campaign's budget in SQL: coupons issued and liability reserved, each moved by one
    conditional UPDATE, so concurrent issuers in any number of processes never overshoot."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def reserve(self, campaign_id: str, amount: int) -> Refusal | None:
        """Count one coupon and reserve ``amount``; the refusal when either limit would pass."""
        result = self.session.execute(
            update(Campaign)
            .where(
                Campaign.id == campaign_id,
                or_(Campaign.max_coupons.is_(None), Campaign.issued_count < Campaign.max_coupons),
                or_(
                    Campaign.max_liability.is_(None),
                    Campaign.reserved_liability + amount <= Campaign.max_liability,
                ),
            )
            .values(
                issued_count=Campaign.issued_count + 1,
                reserved_liability=Campaign.reserved_liability + amount,
            )
            .execution_options(synchronize_session=False, **COUNTERS_ONLY)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            return None
        row = self.session.execute(
            select(Campaign.issued_count, Campaign.max_coupons).where(Campaign.id == campaign_id)
        ).one()
        if row.max_coupons is not None and row.issued_count >= row.max_coupons:
            return Refusal.BUDGET_COUPONS
        return Refusal.BUDGET_LIABILITY

    def release(self, campaign_id: str, amount: int) -> None:
        """Give back the liability of a coupon that can no longer be redeemed (campaigns without
        a budget keep no counters: ``recount`` sets them when a budget is set)."""
        if amount:
            self.session.execute(
                update(Campaign)
                .where(
                    Campaign.id == campaign_id,
                    or_(Campaign.max_coupons.is_not(None), Campaign.max_liability.is_not(None)),
                )
                .values(reserved_liability=Campaign.reserved_liability - amount)
                .execution_options(synchronize_session=False, **COUNTERS_ONLY)
            )

    def recount(self, campaign_id: str, now: datetime) -> None:
        """Set both counters from the coupons themselves (when a budget is set on a running
        campaign): every coupon counts; liability of those not expired."""
        issued = self.session.scalar(
            select(func.count()).select_from(Coupon).where(Coupon.campaign_id == campaign_id)
        )
        reserved = self.session.scalar(
            select(func.coalesce(func.sum(Coupon.liability), 0)).where(
                Coupon.campaign_id == campaign_id,
                Coupon.status != CouponStatus.EXPIRED.value,
            )
        )
        self.session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(issued_count=issued or 0, reserved_liability=reserved or 0)
            .execution_options(synchronize_session=False, **COUNTERS_ONLY)
        )


class CouponRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def by_code(self, code: str) -> Coupon | None:
        return self.session.scalar(select(Coupon).where(Coupon.code == code))

    def redeem(self, *, code: str, store_id: str, now: datetime, grace: timedelta) -> bool:
        """The one conditional transition issued -> redeemed; True only for the single winner.
        Valid from issue until ``expires_at + grace`` (the till's clock and the network lag)."""
        result = self.session.execute(
            update(Coupon)
            .where(
                Coupon.code == code,
                Coupon.store_id == store_id,
                Coupon.status == CouponStatus.ISSUED.value,
                Coupon.issued_at <= now,
                Coupon.expires_at > now - grace,
            )
            .values(status=CouponStatus.REDEEMED.value, redeemed_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def unredeem(
        self, *, code: str, store_id: str, now: datetime, grace: timedelta, window: timedelta
    ) -> bool:
        """Void: redeemed (within ``window``) -> issued, only while the coupon is still valid."""
        result = self.session.execute(
            update(Coupon)
            .where(
                Coupon.code == code,
                Coupon.store_id == store_id,
                Coupon.status == CouponStatus.REDEEMED.value,
                Coupon.redeemed_at >= now - window,
                Coupon.expires_at > now - grace,
            )
            .values(status=CouponStatus.ISSUED.value, redeemed_at=None)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def void_expired(
        self, *, code: str, store_id: str, now: datetime, grace: timedelta, window: timedelta
    ) -> tuple[str, int] | None:
        """Void of a redemption whose coupon is no longer valid: redeemed -> expired. Returns the
        (campaign, liability) to release, once."""
        row = self.session.execute(
            update(Coupon)
            .where(
                Coupon.code == code,
                Coupon.store_id == store_id,
                Coupon.status == CouponStatus.REDEEMED.value,
                Coupon.redeemed_at >= now - window,
                Coupon.expires_at <= now - grace,
            )
            .values(status=CouponStatus.EXPIRED.value)
            .returning(Coupon.campaign_id, Coupon.liability)
            .execution_options(synchronize_session=False)
        ).first()
        return None if row is None else (row[0], row[1])

    def expire_due(
        self, cutoff: datetime, limit: int, coupon_id: str | None = None
    ) -> tuple[int, Counter[str]]:
        """issued -> expired for coupons whose ``expires_at`` is at or before ``cutoff``, at most
        ``limit`` of them (or just ``coupon_id``). Returns the liability to release per campaign;
        a coupon moves (and its liability is counted) exactly once, however many sweeps run."""
        due = select(Coupon.id).where(
            Coupon.status == CouponStatus.ISSUED.value, Coupon.expires_at <= cutoff
        )
        if coupon_id is not None:
            due = due.where(Coupon.id == coupon_id)
        due = due.order_by(Coupon.expires_at).limit(limit)
        rows = self.session.execute(
            update(Coupon)
            .where(Coupon.id.in_(due), Coupon.status == CouponStatus.ISSUED.value)
            .values(status=CouponStatus.EXPIRED.value)
            .returning(Coupon.campaign_id, Coupon.liability)
            .execution_options(synchronize_session=False)
        ).all()
        released: Counter[str] = Counter()
        for campaign_id, liability in rows:
            released[campaign_id] += liability
        return len(rows), released

    def issued_between(
        self,
        subject_id: str,
        start: datetime,
        end: datetime,
        campaign_id: str | None = None,
    ) -> int:
        """Coupons issued to this shopper in [start, end), of one campaign or of all: what a
        daily cap counted, rebuilt when the hot state lost it."""
        query = select(func.count()).where(
            Coupon.subject_id == subject_id, Coupon.issued_at >= start, Coupon.issued_at < end
        )
        if campaign_id is not None:
            query = query.where(Coupon.campaign_id == campaign_id)
        return int(self.session.scalar(query) or 0)

    def last_at_store(self, subject_id: str, store_id: str) -> datetime | None:
        """When this shopper last got a coupon at this store (the cooldown's durable check)."""
        return self.session.scalar(
            select(func.max(Coupon.issued_at)).where(
                Coupon.subject_id == subject_id, Coupon.store_id == store_id
            )
        )

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

    def claim(
        self,
        delivery_id: str,
        now: datetime,
        lease_until: datetime,
        token: int | None = None,
        lease_name: str = "scheduler",
    ) -> bool:
        return bool(self.claim_many([delivery_id], now, lease_until, token, lease_name))

    def claim_many(
        self,
        delivery_ids: Sequence[str],
        now: datetime,
        lease_until: datetime,
        token: int | None = None,
        lease_name: str = "scheduler",
    ) -> list[str]:
        """Atomically take due deliveries: pending, or sending with a lapsed claim, or sending
        under an older fencing token (its claimer was deposed or died). With ``token`` the claim
        succeeds only while that token still holds the scheduler lease (fencing). Returns the
        ids taken, in one statement."""
        taken_over = Delivery.status == DeliveryStatus.SENDING.value
        if token is not None:
            taken_over = and_(
                taken_over,
                or_(Delivery.claimed_until < now, func.coalesce(Delivery.claim_token, 0) < token),
            )
        else:
            taken_over = and_(taken_over, Delivery.claimed_until < now)
        conditions = [
            Delivery.id.in_(list(delivery_ids)),
            or_(Delivery.status == DeliveryStatus.PENDING.value, taken_over),
        ]
        if token is not None:
            conditions.append(
                exists().where(
                    SchedulerLease.name == lease_name,
                    SchedulerLease.token == token,
                    SchedulerLease.expires_at > now,
                )
            )
        # Rows are locked in id order and rows another claimer holds are skipped: two batches
        # that share deliveries (a sweep re-enqueueing one already queued) never deadlock, and
        # the later one simply does not get what the first took. SQLite ignores FOR UPDATE (its
        # writers are serialised anyway).
        claimable = (
            select(Delivery.id)
            .where(*conditions)
            .order_by(Delivery.id)
            .with_for_update(skip_locked=True, of=Delivery)
        )
        result = self.session.execute(
            update(Delivery)
            .where(Delivery.id.in_(claimable.scalar_subquery()), *conditions)
            .values(
                status=DeliveryStatus.SENDING.value,
                claimed_until=lease_until,
                claim_token=token,
                attempts=Delivery.attempts + 1,
                updated_at=now,
            )
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
        return list(result.scalars())

    def load_for_send(
        self, delivery_ids: Sequence[str]
    ) -> list[tuple[Delivery, Coupon, Offer, Store, Device | None]]:
        """The deliveries with their coupon, offer, store and device, in one query."""
        if not delivery_ids:
            return []
        rows = self.session.execute(
            select(Delivery, Coupon, Offer, Store, Device)
            .join(Coupon, Coupon.id == Delivery.coupon_id)
            .join(Offer, Offer.id == Coupon.offer_id)
            .join(Store, Store.id == Coupon.store_id)
            .outerjoin(Device, Device.id == Coupon.device_id)
            .where(Delivery.id.in_(list(delivery_ids)))
            .order_by(Delivery.due_at)
        )
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def mark_sent(
        self, delivery_ids: Sequence[str], token: int | None, sent_at: datetime
    ) -> set[str]:
        """Record the providers' acceptances in one statement, only for claims that still
        stand (no newer leader took the delivery over meanwhile). Returns the ids recorded."""
        owner = Delivery.claim_token.is_(None) if token is None else Delivery.claim_token == token
        result = self.session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(list(delivery_ids)),
                Delivery.status == DeliveryStatus.SENDING.value,
                owner,
            )
            .values(
                status=DeliveryStatus.SENT.value,
                sent_at=sent_at,
                claimed_until=None,
                updated_at=sent_at,
            )
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
        return set(result.scalars())

    def unfinished(self, due_before: datetime | None = None) -> list[tuple[str, datetime]]:
        """Pending or in-flight deliveries (due before ``due_before`` when given), soonest first."""
        query = select(Delivery.id, Delivery.due_at).where(
            Delivery.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value])
        )
        if due_before is not None:
            query = query.where(Delivery.due_at < due_before)
        rows = self.session.execute(query.order_by(Delivery.due_at))
        return [(r.id, r.due_at) for r in rows]

    def drop_expired(self, now: datetime, margin: timedelta) -> int:
        """Pending deliveries whose coupon has less than ``margin`` left become
        ``expired_undelivered`` in one statement (in-flight ones are left to their sender)."""
        dying = exists().where(Coupon.id == Delivery.coupon_id, Coupon.expires_at <= now + margin)
        result = self.session.execute(
            update(Delivery)
            .where(Delivery.status == DeliveryStatus.PENDING.value, dying)
            .values(
                status=DeliveryStatus.EXPIRED_UNDELIVERED.value,
                last_error="coupon expired before it could be sent",
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
