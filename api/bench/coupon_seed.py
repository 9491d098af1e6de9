"""Many coupons with their webhook deliveries, written straight into the database.

For the coupon benchmark and the kill -9 test: one store, one campaign and offer, one shopper
who granted ``marketing_offers`` on the ``webhook`` channel (through the real ledger), then
coupons and outbox rows inserted in bulk (5,000 rows per statement), as the offer path would
have written them, each delivery due at its own instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from consent.domain import Channel, CollectionMethod, ConsentStatus, Purpose
from consent.ledger import ConsentLedger, LedgerConfig
from consent.service import NoticeRegistry, SubjectRegistry
from core.db import transaction
from core.ids import new_id
from geo.models import Store
from offers.domain import CouponStatus, DeliveryKind, DeliveryStatus, new_coupon_code
from offers.models import Campaign, Coupon, Delivery, Offer

CHUNK = 5_000
NOTICE = "seed-1"


@dataclass(frozen=True, slots=True)
class SeededDelivery:
    delivery_id: str
    coupon_id: str
    due_at: datetime
    expires_at: datetime

    @property
    def idempotency_key(self) -> str:
        return f"{self.coupon_id}:webhook"


def seed_webhook_coupons(
    sessions: sessionmaker[Session],
    ledger_config: LedgerConfig,
    *,
    count: int,
    now: datetime,
    due_at: Callable[[int], datetime],
    expires_at: Callable[[int], datetime],
) -> list[SeededDelivery]:
    with transaction(sessions) as session:
        NoticeRegistry(session).publish(
            purpose=Purpose.MARKETING_OFFERS,
            version=NOTICE,
            language="en",
            text="Offers from stores near you, on the channels you choose.",
            now=now,
        )
        subject, device = SubjectRegistry(session).register_device(
            customer_ref=f"seed-{new_id('c')}",
            platform="android",
            push_token=None,
            email=None,
            now=now,
        )
        consent = ConsentLedger(session, ledger_config).record(
            subject_id=subject.id,
            purpose=Purpose.MARKETING_OFFERS,
            channel=Channel.WEBHOOK,
            status=ConsentStatus.GIVEN,
            notice_version=NOTICE,
            method=CollectionMethod.API,
            evidence={"actor": "seed"},
            occurred_at=now,
            now=now,
        )
        store = Store(id=new_id("sto"), name="Seed Store", timezone="UTC", created_at=now)
        campaign = Campaign(
            id=new_id("cmp"), name="Seed", status="active", daily_cap_per_shopper=1, created_at=now
        )
        session.add_all([store, campaign])
        session.flush()
        offer = Offer(
            id=new_id("ofr"),
            campaign_id=campaign.id,
            title="Coffee now",
            body="Pop in.",
            discount_text="30% off",
            valid_minutes=15,
            created_at=now,
        )
        session.add(offer)
        session.flush()
        ids = (subject.id, device.id, consent.id, store.id, campaign.id, offer.id)
    seeded: list[SeededDelivery] = []
    for start in range(0, count, CHUNK):
        batch = [
            SeededDelivery(new_id("dlv"), new_id("cpn"), due_at(i), expires_at(i))
            for i in range(start, min(count, start + CHUNK))
        ]
        _insert(sessions, batch, ids, now)
        seeded.extend(batch)
    return seeded


def _insert(
    sessions: sessionmaker[Session],
    batch: list[SeededDelivery],
    ids: tuple[str, str, int, str, str, str],
    now: datetime,
) -> None:
    subject_id, device_id, consent_id, store_id, campaign_id, offer_id = ids
    with transaction(sessions) as session:
        session.execute(
            insert(Coupon),
            [
                {
                    "id": s.coupon_id,
                    "code": new_coupon_code(),
                    "offer_id": offer_id,
                    "campaign_id": campaign_id,
                    "store_id": store_id,
                    "subject_id": subject_id,
                    "device_id": device_id,
                    "trigger_event_id": "seed",
                    "consent_event_id": consent_id,
                    "status": CouponStatus.ISSUED.value,
                    "issued_at": now,
                    "expires_at": s.expires_at,
                }
                for s in batch
            ],
        )
        session.execute(
            insert(Delivery),
            [
                {
                    "id": s.delivery_id,
                    "coupon_id": s.coupon_id,
                    "channel": Channel.WEBHOOK.value,
                    "kind": DeliveryKind.OFFER.value,
                    "address": subject_id,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "due_at": s.due_at,
                    "updated_at": now,
                }
                for s in batch
            ],
        )
