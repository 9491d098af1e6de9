"""A subject's location and offer data, erased with the subject (see ``consent/erasure.py``).

Pings and fence events go. Coupons stay for the campaign's accounts (they name only the
pseudonymous subject and device ids), but their deliveries lose the address they were sent to,
and any delivery not yet sent is dropped as ``no_consent``. Offer decisions (the holdout
experiment's records) keep their counts but lose the subject id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from geo.models import FenceEvent, Ping
from offers.domain import DeliveryStatus
from offers.models import Coupon, Delivery, OfferDecision

ERASED_ADDRESS = "[erased]"


class LocationAndOfferData:
    def erase_subject(
        self, session: Session, subject_id: str, device_ids: Sequence[str], now: datetime
    ) -> dict[str, int]:
        pings = session.execute(
            delete(Ping)
            .where(Ping.subject_id == subject_id)
            .execution_options(synchronize_session=False)
        )
        events = session.execute(
            delete(FenceEvent)
            .where(FenceEvent.subject_id == subject_id)
            .execution_options(synchronize_session=False)
        )
        coupons = select(Coupon.id).where(Coupon.subject_id == subject_id).scalar_subquery()
        dropped = session.execute(
            update(Delivery)
            .where(
                Delivery.coupon_id.in_(coupons),
                Delivery.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]),
            )
            .values(
                status=DeliveryStatus.NO_CONSENT.value,
                last_error="subject erased (GDPR Art. 17)",
                claimed_until=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        scrubbed = session.execute(
            update(Delivery)
            .where(Delivery.coupon_id.in_(coupons))
            .values(address=ERASED_ADDRESS)
            .execution_options(synchronize_session=False)
        )
        # Decisions stay for the campaign's counts, but no longer name the shopper.
        unlinked = session.execute(
            update(OfferDecision)
            .where(OfferDecision.subject_id == subject_id)
            .values(subject_id="")
            .execution_options(synchronize_session=False)
        )
        return {
            "offer_decisions_unlinked": int(unlinked.rowcount),  # type: ignore[attr-defined]
            "pings": int(pings.rowcount),  # type: ignore[attr-defined]
            "fence_events": int(events.rowcount),  # type: ignore[attr-defined]
            "deliveries_dropped": int(dropped.rowcount),  # type: ignore[attr-defined]
            "delivery_addresses_scrubbed": int(scrubbed.rowcount),  # type: ignore[attr-defined]
        }
