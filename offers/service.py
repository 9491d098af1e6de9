"""Offer decisions: on a fence event, which coupons to issue and which deliveries to queue."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from consent.domain import Channel, ConsentDecision, Purpose
from consent.gate import ConsentGate
from consent.models import Device
from consent.preferences import PreferencesRepository
from core.db import on_commit
from core.ids import new_id
from core.state import HotState
from geo.models import FenceEvent
from offers.channel_choice import choose_channels
from offers.domain import (
    CampaignWindow,
    CouponStatus,
    DeliveryStatus,
    cap_key,
    coupon_expiry,
    new_coupon_code,
    shopper_cap_key,
)
from offers.models import Coupon, Delivery
from offers.repository import CampaignRepository

log = logging.getLogger(__name__)
CAP_TTL_S = 2 * 86400
UNLIMITED = 1_000_000


@dataclass(frozen=True, slots=True)
class IssuedCoupon:
    coupon_id: str
    code: str
    campaign_id: str
    store_id: str
    title: str
    discount_text: str
    expires_at: datetime
    delivery_channels: tuple[str, ...]


class OfferIssuer:
    """Turns an ``enter`` into coupons, each with its outbox rows, in the caller's transaction.

    The scheduler hears of a new delivery only after the transaction commits.
    """

    def __init__(
        self,
        session: Session,
        state: HotState,
        channels: Collection[str],
        enqueue_delivery: Callable[[str], None],
    ) -> None:
        self.session = session
        self.state = state
        self.channels = channels
        self.enqueue_delivery = enqueue_delivery
        self.gate = ConsentGate(session, state)

    def on_enter(self, event: FenceEvent, device: Device, now: datetime) -> list[IssuedCoupon]:
        """Coupons for an ``enter``. Without marketing consent nothing is issued; in the
        shopper's quiet hours the offer is dropped (never deferred: an exploding offer later
        would be for a place they have left); the shopper's daily maximum counts every campaign.
        A drop for a preference is recorded on the event (``eligible: false`` with the reason)
        and in the offer's consent receipt."""
        marketing = self.gate.check_any_channel(event.subject_id, Purpose.MARKETING_OFFERS, now)
        if not marketing.allowed or marketing.event_id is None:
            self.gate.receipt(event.subject_id, "offer", marketing, now, ref=event.id)
            return []
        prefs = PreferencesRepository(self.session).get(event.subject_id)
        if prefs.quiet_at(now):
            self._drop(
                event, marketing, now, "quiet_hours", {"quiet_hours": prefs.describe_quiet()}
            )
            return []
        shopper_key = shopper_cap_key(event.subject_id, prefs.local_day(now))
        shopper_limit = prefs.max_offers_per_day or UNLIMITED
        issued: list[IssuedCoupon] = []
        over_shopper_limit = False
        for campaign, offer in CampaignRepository(self.session).offers_for_store(event.store_id):
            window = CampaignWindow(campaign.status, campaign.starts_at, campaign.ends_at)
            if not window.is_live(now):
                continue
            if not prefs.wants_category(campaign.category):
                continue
            key = cap_key(event.subject_id, campaign.id, now)
            if not self.state.incr_within(key, campaign.daily_cap_per_shopper, CAP_TTL_S):
                continue
            # Counted even without a limit, so a limit set during the day counts what came before.
            if not self.state.incr_within(shopper_key, shopper_limit, CAP_TTL_S):
                self.state.incr(key, CAP_TTL_S, amount=-1)  # give the campaign's count back
                over_shopper_limit = True
                continue
            coupon = Coupon(
                id=new_id("cpn"),
                code=new_coupon_code(),
                offer_id=offer.id,
                campaign_id=campaign.id,
                store_id=event.store_id,
                subject_id=event.subject_id,
                device_id=device.id,
                trigger_event_id=event.id,
                consent_event_id=marketing.event_id,
                status=CouponStatus.ISSUED.value,
                issued_at=now,
                expires_at=coupon_expiry(now, offer.valid_minutes),
            )
            self.session.add(coupon)
            self.session.flush()
            self.gate.receipt(event.subject_id, "offer", marketing, now, ref=coupon.id)
            deliveries = self._queue_deliveries(coupon, device, now)
            issued.append(
                IssuedCoupon(
                    coupon.id,
                    coupon.code,
                    campaign.id,
                    coupon.store_id,
                    offer.title,
                    offer.discount_text,
                    coupon.expires_at,
                    tuple(d.channel for d in deliveries),
                )
            )
        if over_shopper_limit and not issued:
            limit = {"max_offers_per_day": prefs.max_offers_per_day, "timezone": prefs.timezone}
            self._drop(event, marketing, now, "shopper_daily_limit", limit)
        return issued

    def _drop(
        self,
        event: FenceEvent,
        marketing: ConsentDecision,
        now: datetime,
        reason: str,
        details: dict[str, Any],
    ) -> None:
        event.eligible, event.reason = False, reason
        self.gate.receipt(
            event.subject_id,
            "offer",
            marketing,
            now,
            ref=event.id,
            details={"dropped": reason, **details},
        )
        log.info(
            "offer for %s at %s dropped: %s %s", event.subject_id, event.store_id, reason, details
        )

    def _queue_deliveries(self, coupon: Coupon, device: Device, now: datetime) -> list[Delivery]:
        addresses = {
            Channel.PUSH: device.push_token,
            Channel.EMAIL: device.email,
            Channel.WEBHOOK: coupon.subject_id,  # the brand's systems know the shopper by id
        }

        def allowed(channel: Channel) -> bool:
            decision = self.gate.check(coupon.subject_id, Purpose.MARKETING_OFFERS, channel, now)
            return decision.allowed

        deliveries: list[Delivery] = []
        for channel, address in choose_channels(addresses, self.channels, allowed):
            delivery = Delivery(
                id=new_id("dlv"),
                coupon_id=coupon.id,
                channel=channel.value,
                address=address,
                status=DeliveryStatus.PENDING.value,
                attempts=0,
                due_at=now,
                claimed_until=now - timedelta(seconds=1),
                updated_at=now,
            )
            self.session.add(delivery)
            deliveries.append(delivery)
        self.session.flush()
        for delivery in deliveries:
            delivery_id = delivery.id
            on_commit(self.session, lambda d=delivery_id: self.enqueue_delivery(d))  # type: ignore[misc]
        return deliveries
