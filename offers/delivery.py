"""Sending one delivery: claim it, re-check the coupon and the channel's consent, send, record.

Nothing is handed to a channel once the coupon has less than ``margin`` left to live; the
channel gets a TTL that ends at the coupon's expiry. Retries happen only while time remains.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from consent.crypto import EvidenceSealer
from consent.domain import Channel as ConsentChannel
from consent.domain import Purpose
from consent.gate import ConsentGate
from consent.models import Device
from consent.optin import ConsentLinks, confirmed_address
from core.clock import Clock
from core.db import on_commit, transaction
from core.state import HotState
from geo.models import Store
from notify.channel import Channel, OfferMessage, PermanentSendError, TransientSendError
from notify.errors import RetryLater, TokenUnregistered
from offers.domain import (
    CouponStatus,
    DeliveryKind,
    DeliveryStatus,
    format_code,
    remaining_seconds,
)
from offers.followups import FollowUps
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
        """Exponential backoff (``base_s`` doubling per attempt, at most ``cap_s``) with "equal"
        jitter: uniform over the upper half of that ceiling, so retries of many deliveries
        spread out yet never come sooner than half the backoff."""
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
        followups: FollowUps | None = None,
        countdown_url: Callable[[str], str] | None = None,
        *,
        sealer: EvidenceSealer,
    ) -> None:
        self.sessions = sessions
        self.sealer = sealer  # opens the ledger's evidence: the confirmed email address
        self.links = links
        self.state = state
        self.channels = channels
        self.clock = clock
        self.margin = margin
        self.retry = retry or RetryPolicy()
        self.followups = followups or FollowUps()
        self.countdown_url = countdown_url
        self.reschedule: Callable[[str, float], None] = lambda _id, _delay: None
        self.listeners: list[Callable[[DeliveryReport], None]] = []
        # Set by the scheduler: the leader lease's fencing token (None: not the leader). Left
        # unset, the worker claims without fencing (a single process driving it by hand).
        self.fence: Callable[[], int | None] | None = None
        self.lease_name = "scheduler"

    def _token(self) -> tuple[bool, int | None]:
        """(may act, fencing token)."""
        if self.fence is None:
            return True, None
        token = self.fence()
        return token is not None, token

    @staticmethod
    def _owned(delivery: Delivery, token: int | None) -> bool:
        """Whether this worker's claim still stands (no newer leader took the delivery over)."""
        return delivery.status == DeliveryStatus.SENDING.value and (
            token is None or delivery.claim_token == token
        )

    def deliver(self, delivery_id: str) -> DeliveryReport | None:
        """Run one attempt. None when another worker holds the delivery or it is already final."""
        return self.deliver_many([delivery_id]).get(delivery_id)

    def deliver_many(self, delivery_ids: Sequence[str]) -> dict[str, DeliveryReport]:
        """One attempt for each delivery that can be claimed now: one claim statement and one
        load for the whole batch, then each send, then the acceptances recorded together.
        Deliveries another worker holds, or already final, are left out of the answer."""
        may_act, token = self._token()
        if not may_act or not delivery_ids:
            return {}
        now = self.clock.now()
        reports: dict[str, DeliveryReport] = {}
        ready: list[tuple[Delivery, Coupon, OfferMessage]] = []
        with transaction(self.sessions) as session:
            repository = DeliveryRepository(session)
            claimed = repository.claim_many(delivery_ids, now, now + LEASE, token, self.lease_name)
            for delivery, coupon, offer, store, device in repository.load_for_send(claimed):
                refusal = self._refusal(session, delivery, coupon, now)
                if refusal is not None:
                    status, detail = refusal
                    reports[delivery.id] = self._finish(
                        session, delivery, coupon, status, detail, now
                    )
                else:
                    message = self._message(session, delivery, coupon, offer, store, device, now)
                    ready.append((delivery, coupon, message))
        accepted: list[tuple[Delivery, Coupon, str]] = []
        for delivery, coupon, message in ready:
            outcome = self._send(delivery, coupon, message, token)
            if isinstance(outcome, str):
                accepted.append((delivery, coupon, outcome))
            elif outcome is not None:
                reports[delivery.id] = outcome
        if accepted:
            reports.update(self._record_sent(accepted, token))
        return reports

    def _send(
        self, delivery: Delivery, coupon: Coupon, message: OfferMessage, token: int | None
    ) -> str | DeliveryReport | None:
        """The provider's receipt id when it accepted, else the failure's report."""
        delivery_id = delivery.id
        if coupon.expires_at - self.margin <= self.clock.now():  # the batch took too long
            return self._after_failure(
                delivery_id,
                token,
                "coupon expired before it could be sent",
                transient=False,
                status=DeliveryStatus.EXPIRED_UNDELIVERED,
            )
        channel = self.channels[delivery.channel]
        try:
            return channel.send(message).provider_id
        except RetryLater as exc:  # the provider said when: never sooner than that
            return self._after_failure(
                delivery_id, token, str(exc), transient=True, not_before_s=exc.retry_after_s
            )
        except TransientSendError as exc:
            return self._after_failure(delivery_id, token, str(exc), transient=True)
        except TokenUnregistered as exc:  # the app was uninstalled: stop using that token
            return self._after_failure(
                delivery_id, token, str(exc), transient=False, forget_address=True
            )
        except PermanentSendError as exc:
            return self._after_failure(delivery_id, token, str(exc), transient=False)
        except Exception as exc:  # an unknown failure is treated as temporary, never as sent
            log.exception("channel %s raised", delivery.channel)
            detail = f"{type(exc).__name__}: {exc}"
            return self._after_failure(delivery_id, token, detail, transient=True)

    def _record_sent(
        self, accepted: list[tuple[Delivery, Coupon, str]], token: int | None
    ) -> dict[str, DeliveryReport]:
        sent_at = self.clock.now()
        reports: dict[str, DeliveryReport] = {}
        with transaction(self.sessions) as session:
            recorded = DeliveryRepository(session).mark_sent(
                [d.id for d, _, _ in accepted], token, sent_at
            )
            for delivery, coupon, provider_id in accepted:
                if delivery.id not in recorded:
                    log.warning("delivery %s was taken over while sending", delivery.id)
                    continue
                delivery.status, delivery.sent_at = DeliveryStatus.SENT.value, sent_at
                if delivery.kind == DeliveryKind.OFFER.value:
                    self.followups.after_sent(session, delivery, coupon, sent_at, self)
                detail = f"accepted by {delivery.channel}: {provider_id}"
                reports[delivery.id] = self._report(delivery, detail, sent_at)
            done = list(reports.values())

            def emit_all() -> None:
                for report in done:
                    self._emit(report)

            on_commit(session, emit_all)
        return reports

    def _refusal(
        self, session: Session, delivery: Delivery, coupon: Coupon, now: datetime
    ) -> tuple[DeliveryStatus, str] | None:
        if coupon.expires_at - self.margin <= now:
            return DeliveryStatus.EXPIRED_UNDELIVERED, "coupon expired before it could be sent"
        if coupon.status != CouponStatus.ISSUED.value:
            if delivery.kind == DeliveryKind.REMINDER.value:
                return DeliveryStatus.CANCELLED, f"coupon is {coupon.status}; no reminder needed"
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
        if delivery.channel == ConsentChannel.EMAIL.value:
            # the opt-in is for the address its confirmation link went to, not whatever
            # address the device that triggered the offer was registered with
            address = confirmed_address(session, self.sealer, coupon.subject_id, decision.event_id)
            if address is None:
                return DeliveryStatus.NO_CONSENT, "no confirmed address for offers by email"
            if address.casefold() != (delivery.address or "").casefold():
                log.info("delivery %s goes to the confirmed address instead", delivery.id)
                delivery.address = address
        return None

    def _message(
        self,
        session: Session,
        delivery: Delivery,
        coupon: Coupon,
        offer: Offer,
        store: Store,
        device: Device | None,
        now: datetime,
    ) -> OfferMessage:
        ttl = remaining_seconds(coupon.expires_at - self.margin, now)
        reminder = delivery.kind == DeliveryKind.REMINDER.value
        unsubscribe_url = None
        if self.links is not None and delivery.channel == ConsentChannel.EMAIL.value:
            unsubscribe_url = self.links.unsubscribe_url(
                coupon.subject_id, ConsentChannel.EMAIL, now
            )
        key = f"{coupon.id}:{delivery.channel}" + (":reminder" if reminder else "")
        left_min = max(1, round((coupon.expires_at - now).total_seconds() / 60))
        campaign = session.get(Campaign, coupon.campaign_id)
        context = TemplateContext(
            store=store.name,
            discount=offer.discount_text,
            minutes=offer.valid_minutes,
            expires_at=coupon.expires_at,
            campaign=campaign.name if campaign else "",
        )
        return OfferMessage(
            idempotency_key=key,
            address=delivery.address,
            title=f"{left_min} min left: {render(offer.title, context)}"
            if reminder
            else render(offer.title, context),
            body=render(offer.body, context),
            discount_text=offer.discount_text,
            store_name=store.name,
            code=format_code(coupon.code),
            expires_at=coupon.expires_at,
            ttl_s=ttl,
            unsubscribe_url=unsubscribe_url,
            platform=device.platform if device is not None else None,
            countdown_url=self.countdown_url(coupon.code) if self.countdown_url else None,
        )

    def _after_failure(
        self,
        delivery_id: str,
        token: int | None,
        error: str,
        *,
        transient: bool,
        not_before_s: float | None = None,
        forget_address: bool = False,
        status: DeliveryStatus = DeliveryStatus.FAILED,
    ) -> DeliveryReport | None:
        now = self.clock.now()
        with transaction(self.sessions) as session:
            delivery = session.get(Delivery, delivery_id)
            coupon = session.get(Coupon, delivery.coupon_id) if delivery else None
            assert delivery is not None and coupon is not None
            if not self._owned(delivery, token):
                return None
            delivery.last_error = error
            if forget_address:
                device = session.get(Device, coupon.device_id)
                if device is not None and device.push_token == delivery.address:
                    device.push_token = None
            if not transient:
                if status is DeliveryStatus.FAILED:
                    self.followups.after_permanent_failure(session, delivery, coupon, now, self)
                return self._finish(session, delivery, coupon, status, error, now)
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
