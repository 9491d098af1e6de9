"""Sending one delivery: claim it, re-check the coupon and the channel's consent, send, record.

Nothing is handed to a channel once the coupon has less than ``margin`` left to live; the
channel gets a TTL that ends at the coupon's expiry. Retries happen only while time remains.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from consent.domain import Channel as ConsentChannel
from consent.domain import Purpose
from consent.gate import ConsentGate
from consent.models import Device
from consent.optin import ConsentLinks
from core.clock import Clock
from core.db import on_commit, transaction
from core.state import HotState
from geo.models import Store
from notify.channel import Channel, OfferMessage, PermanentSendError, TransientSendError
from notify.errors import RetryLater, TokenUnregistered
from offers.domain import CouponStatus, DeliveryStatus, format_code, remaining_seconds
from offers.models import Campaign, Coupon, Delivery, Offer
from offers.repository import DeliveryRepository
from offers.templates import TemplateContext, render

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    delivery_id: str
    coupon_id: str
    channel: str
    status: str
    attempts: int
    detail: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 2.0
    cap_s: float = 60.0

    def backoff_s(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        ceiling = min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


class DeliveryWorker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        channels: Mapping[str, Channel],
        clock: Clock,
        margin: timedelta,
        state: HotState,
        retry: RetryPolicy | None = None,
        links: ConsentLinks | None = None,
    ) -> None:
        self.sessions = sessions
        self.links = links
        self.state = state
        self.channels = channels
        self.clock = clock
        self.margin = margin
        self.retry = retry or RetryPolicy()
        self.reschedule: Callable[[str, float], None] = lambda _id, _delay: None
        self.listeners: list[Callable[[DeliveryReport], None]] = []

    def deliver(self, delivery_id: str) -> DeliveryReport | None:
        """Run one attempt. None when another worker holds the delivery or it is already final."""
        now = self.clock.now()
        with transaction(self.sessions) as session:
            if not DeliveryRepository(session).claim(delivery_id, now, now + LEASE):
                return None
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            coupon = session.get(Coupon, delivery.coupon_id)
            assert coupon is not None
            refusal = self._refusal(session, delivery, coupon, now)
            if refusal is not None:
                status, detail = refusal
                return self._finish(session, delivery, coupon, status, detail, now)
            message = self._message(session, delivery, coupon, now)
        channel = self.channels[delivery.channel]
        try:
            receipt = channel.send(message)
        except RetryLater as exc:  # the provider said when: never sooner than that
            return self._after_failure(
                delivery_id, str(exc), transient=True, not_before_s=exc.retry_after_s
            )
        except TransientSendError as exc:
            return self._after_failure(delivery_id, str(exc), transient=True)
        except TokenUnregistered as exc:  # the app was uninstalled: stop using that token
            return self._after_failure(delivery_id, str(exc), transient=False, forget_address=True)
        except PermanentSendError as exc:
            return self._after_failure(delivery_id, str(exc), transient=False)
        except Exception as exc:  # an unknown failure is treated as temporary, never as sent
            log.exception("channel %s raised", delivery.channel)
            return self._after_failure(delivery_id, f"{type(exc).__name__}: {exc}", transient=True)
        with transaction(self.sessions) as session:
            delivery = session.get(Delivery, delivery_id)
            coupon = session.get(Coupon, delivery.coupon_id) if delivery else None
            assert delivery is not None and coupon is not None
            delivery.sent_at = self.clock.now()
            return self._finish(
                session,
                delivery,
                coupon,
                DeliveryStatus.SENT,
                f"accepted by {delivery.channel}: {receipt.provider_id}",
                delivery.sent_at,
            )

    def _refusal(
        self, session: Session, delivery: Delivery, coupon: Coupon, now: datetime
    ) -> tuple[DeliveryStatus, str] | None:
        if coupon.expires_at - self.margin <= now:
            return DeliveryStatus.EXPIRED_UNDELIVERED, "coupon expired before it could be sent"
        if coupon.status != CouponStatus.ISSUED.value:
            return DeliveryStatus.FAILED, f"coupon is {coupon.status}; nothing to send"
        if delivery.channel not in self.channels:
            return DeliveryStatus.FAILED, f"no {delivery.channel} channel configured"
        gate = ConsentGate(session, self.state)
        decision = gate.check(
            coupon.subject_id, Purpose.MARKETING_OFFERS, ConsentChannel(delivery.channel), now
        )
        gate.receipt(coupon.subject_id, "delivery", decision, now, ref=delivery.id)
        delivery.consent_event_id = decision.event_id
        if not decision.allowed:
            return DeliveryStatus.NO_CONSENT, decision.reason
        return None

    def _message(
        self, session: Session, delivery: Delivery, coupon: Coupon, now: datetime
    ) -> OfferMessage:
        offer = session.get(Offer, coupon.offer_id)
        store = session.get(Store, coupon.store_id)
        assert offer is not None and store is not None
        ttl = remaining_seconds(coupon.expires_at - self.margin, now)
        unsubscribe_url = None
        if self.links is not None and delivery.channel == ConsentChannel.EMAIL.value:
            unsubscribe_url = self.links.unsubscribe_url(
                coupon.subject_id, ConsentChannel.EMAIL, now
            )
        campaign = session.get(Campaign, coupon.campaign_id)
        context = TemplateContext(
            store=store.name,
            discount=offer.discount_text,
            minutes=offer.valid_minutes,
            expires_at=coupon.expires_at,
            campaign=campaign.name if campaign else "",
        )
        return OfferMessage(
            idempotency_key=f"{coupon.id}:{delivery.channel}",
            address=delivery.address,
            title=render(offer.title, context),
            body=render(offer.body, context),
            discount_text=offer.discount_text,
            store_name=store.name,
            code=format_code(coupon.code),
            expires_at=coupon.expires_at,
            ttl_s=ttl,
            unsubscribe_url=unsubscribe_url,
        )

    def _after_failure(
        self,
        delivery_id: str,
        error: str,
        *,
        transient: bool,
        not_before_s: float | None = None,
        forget_address: bool = False,
    ) -> DeliveryReport:
        now = self.clock.now()
        with transaction(self.sessions) as session:
            delivery = session.get(Delivery, delivery_id)
            coupon = session.get(Coupon, delivery.coupon_id) if delivery else None
            assert delivery is not None and coupon is not None
            delivery.last_error = error
            if forget_address:
                device = session.get(Device, coupon.device_id)
                if device is not None and device.push_token == delivery.address:
                    device.push_token = None
            if not transient:
                return self._finish(session, delivery, coupon, DeliveryStatus.FAILED, error, now)
            backoff = max(self.retry.backoff_s(delivery.attempts), not_before_s or 0.0)
            if now + timedelta(seconds=backoff) >= coupon.expires_at - self.margin:
                return self._finish(
                    session,
                    delivery,
                    coupon,
                    DeliveryStatus.EXPIRED_UNDELIVERED,
                    f"no time left to retry after: {error}",
                    now,
                )
            delivery.status = DeliveryStatus.PENDING.value
            delivery.due_at = now + timedelta(seconds=backoff)
            delivery.claimed_until = None
            delivery.updated_at = now
            report = self._report(delivery, f"retry in {backoff:.1f} s after: {error}", now)
        self.reschedule(delivery_id, backoff)
        self._emit(report)
        return report

    def _finish(
        self,
        session: Session,
        delivery: Delivery,
        coupon: Coupon,
        status: DeliveryStatus,
        detail: str,
        now: datetime,
    ) -> DeliveryReport:
        delivery.status = status.value
        delivery.claimed_until = None
        delivery.updated_at = now
        if status is not DeliveryStatus.SENT and delivery.last_error is None:
            delivery.last_error = detail
        session.flush()
        report = self._report(delivery, detail, now)
        on_commit(session, lambda: self._emit(report))
        return report

    @staticmethod
    def _report(delivery: Delivery, detail: str, now: datetime) -> DeliveryReport:
        return DeliveryReport(
            delivery.id,
            delivery.coupon_id,
            delivery.channel,
            delivery.status,
            delivery.attempts,
            detail,
            now,
        )

    def _emit(self, report: DeliveryReport) -> None:
        for listener in self.listeners:
            try:
                listener(report)
            except Exception:
                log.exception("delivery listener failed")
