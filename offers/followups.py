"""What a delivery's outcome leads to, written in the same transaction as the outcome:

- a **reminder** after an offer was sent: one more delivery on the same channel, due
  ``reminder_before`` ahead of expiry, queued only if that instant is still ahead (by at least
  ``min_lead``) and before the last moment a send is allowed (``expires_at - margin``). At its
  due time it goes out only if the coupon is still ``issued`` (not redeemed, not expired);
  otherwise it is recorded ``cancelled`` or ``expired_undelivered``.
- an **email fallback** after a push failed for good (token unregistered, message refused):
  an email delivery due now, if the device has an address, the shopper's ``marketing_offers``
  consent on ``email`` holds at this moment, the coupon has time left, and no email delivery
  exists for the coupon yet.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.domain import Channel, Purpose
from consent.gate import ConsentGate
from consent.models import Device
from core.db import on_commit
from core.ids import new_id
from offers.domain import DeliveryKind, DeliveryStatus
from offers.models import Coupon, Delivery

if TYPE_CHECKING:
    from offers.delivery import DeliveryWorker

log = logging.getLogger(__name__)


class FollowUps:
    def __init__(
        self,
        *,
        reminder_before: timedelta | None = None,
        min_lead: timedelta = timedelta(seconds=30),
        email_fallback: bool = True,
    ) -> None:
        self.reminder_before = reminder_before
        self.min_lead = min_lead
        self.email_fallback = email_fallback

    def after_sent(
        self,
        session: Session,
        delivery: Delivery,
        coupon: Coupon,
        now: datetime,
        worker: DeliveryWorker,
    ) -> Delivery | None:
        if not self.reminder_before:
            return None
        due = coupon.expires_at - self.reminder_before
        if due < now + self.min_lead or due >= coupon.expires_at - worker.margin:
            return None  # too close to the offer itself, or no time to send it
        return self._add(
            session,
            coupon,
            delivery.channel,
            delivery.address,
            due,
            now,
            worker,
            kind=DeliveryKind.REMINDER,
        )

    def after_permanent_failure(
        self,
        session: Session,
        delivery: Delivery,
        coupon: Coupon,
        now: datetime,
        worker: DeliveryWorker,
    ) -> Delivery | None:
        if (
            not self.email_fallback
            or delivery.channel != Channel.PUSH.value
            or delivery.kind != DeliveryKind.OFFER.value
            or Channel.EMAIL.value not in worker.channels
            or coupon.expires_at - worker.margin <= now
        ):
            return None
        device = session.get(Device, coupon.device_id)
        if device is None or not device.email:
            return None
        existing = session.scalar(
            select(Delivery.id).where(
                Delivery.coupon_id == coupon.id,
                Delivery.channel == Channel.EMAIL.value,
                Delivery.kind == DeliveryKind.OFFER.value,
            )
        )
        if existing is not None:
            return None
        decision = ConsentGate(session, worker.state).check(
            coupon.subject_id, Purpose.MARKETING_OFFERS, Channel.EMAIL, now
        )
        if not decision.allowed:
            return None
        log.info("push for coupon %s failed for good; falling back to email", coupon.id)
        return self._add(
            session, coupon, Channel.EMAIL.value, device.email, now, now, worker, DeliveryKind.OFFER
        )

    @staticmethod
    def _add(
        session: Session,
        coupon: Coupon,
        channel: str,
        address: str,
        due: datetime,
        now: datetime,
        worker: DeliveryWorker,
        kind: DeliveryKind,
    ) -> Delivery:
        follow = Delivery(
            id=new_id("dlv"),
            coupon_id=coupon.id,
            channel=channel,
            kind=kind.value,
            address=address,
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            due_at=due,
            updated_at=now,
        )
        session.add(follow)
        delay = (due - now).total_seconds()
        follow_id = follow.id
        on_commit(session, lambda: worker.reschedule(follow_id, delay))
        return follow
