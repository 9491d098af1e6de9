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
from geo.models import FenceEvent, Store
from offers.decisions import DecisionLog, Outcome, VariantPicker
from offers.domain import (
    CampaignWindow,
    CouponStatus,
    DeliveryStatus,
    cap_key,
    coupon_expiry,
    new_coupon_code,
    shopper_cap_key,
)
from offers.experiments import is_held_out
from offers.models import Campaign, Coupon, Delivery, Offer
from offers.repository import CampaignRepository
from offers.templates import TemplateContext, render

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
    """Turns a trigger into coupons, each with its outbox rows, in the caller's transaction.

    The scheduler hears of a new delivery only after the transaction commits.
    """

    def __init__(
        self,
        session: Session,
        state: HotState,
        channels: Collection[str],
        enqueue_delivery: Callable[[str], None],
        *,
        picker: VariantPicker | None = None,
        holdout_secret: bytes = b"",
    ) -> None:
        self.session = session
        self.picker = picker or VariantPicker()
        self.secret = holdout_secret
        self.state = state
        self.channels = channels
        self.enqueue_delivery = enqueue_delivery
        self.gate = ConsentGate(session, state)

    def on_enter(self, event: FenceEvent, device: Device, now: datetime) -> list[IssuedCoupon]:
        return self.on_trigger(event, device, now)

    def on_trigger(self, event: FenceEvent, device: Device, now: datetime) -> list[IssuedCoupon]:
        """Coupons for a trigger (enter, dwell or approaching) at a store, for every live
        campaign that targets the store (directly or by tag) and listens for the event's kind.
        Without marketing consent nothing is issued; in the shopper's quiet hours the offer is
        dropped (never deferred: an exploding offer later would be for a place they have left);
        the shopper's daily maximum counts every campaign. Each (trigger, campaign) leaves one
        decision: suppressed with its reason, held out, or issued. The holdout is drawn after
        the campaign's own limits and before (and independently of) the variant choice."""
        targeted = self._targeted(event, now)
        if not targeted:
            return []
        log_ = DecisionLog(self.session)
        marketing = self.gate.check_any_channel(event.subject_id, Purpose.MARKETING_OFFERS, now)
        if not marketing.allowed or marketing.event_id is None:
            self.gate.receipt(event.subject_id, "offer", marketing, now, ref=event.id)
            for campaign, _ in targeted:
                log_.record(
                    campaign=campaign,
                    event=event,
                    outcome=Outcome.SUPPRESSED,
                    reason="no_consent",
                    now=now,
                    anonymous=True,
                )
            return []
        prefs = PreferencesRepository(self.session).get(event.subject_id)
        targeted = [(c, o) for c, o in targeted if prefs.wants_category(c.category)]
        if targeted and prefs.quiet_at(now):
            self._drop(
                event, marketing, now, "quiet_hours", {"quiet_hours": prefs.describe_quiet()}
            )
            for campaign, _ in targeted:
                log_.record(
                    campaign=campaign,
                    event=event,
                    outcome=Outcome.SUPPRESSED,
                    reason="quiet_hours",
                    now=now,
                )
            return []
        shopper_key = shopper_cap_key(event.subject_id, prefs.local_day(now))
        shopper_limit = prefs.max_offers_per_day or UNLIMITED
        issued: list[IssuedCoupon] = []
        over_shopper_limit = False
        for campaign, offers in targeted:
            key = cap_key(event.subject_id, campaign.id, now)
            if not self.state.incr_within(key, campaign.daily_cap_per_shopper, CAP_TTL_S):
                log_.record(
                    campaign=campaign,
                    event=event,
                    outcome=Outcome.SUPPRESSED,
                    reason="cap",
                    now=now,
                )
                continue
            if is_held_out(self.secret, campaign.id, event.subject_id, campaign.holdout_share):
                # Held out after the campaign's cap, like the treated: nothing is sent, the
                # shopper's own daily maximum is untouched.
                log_.record(campaign=campaign, event=event, outcome=Outcome.HELD_OUT, now=now)
                continue
            # Counted even without a limit, so a limit set during the day counts what came before.
            if not self.state.incr_within(shopper_key, shopper_limit, CAP_TTL_S):
                self.state.incr(key, CAP_TTL_S, amount=-1)  # give the campaign's count back
                over_shopper_limit = True
                log_.record(
                    campaign=campaign,
                    event=event,
                    outcome=Outcome.SUPPRESSED,
                    reason="shopper_daily_limit",
                    now=now,
                )
                continue
            offer = self.picker.pick(self.session, campaign, offers, now)
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
            log_.record(
                campaign=campaign,
                event=event,
                outcome=Outcome.ISSUED,
                offer_id=offer.id,
                coupon_id=coupon.id,
                now=now,
            )
            self.gate.receipt(event.subject_id, "offer", marketing, now, ref=coupon.id)
            deliveries = self._queue_deliveries(coupon, device, now)
            store = self.session.get(Store, event.store_id)
            context = TemplateContext(
                store=store.name if store else "",
                discount=offer.discount_text,
                minutes=offer.valid_minutes,
                expires_at=coupon.expires_at,
                campaign=campaign.name,
            )
            issued.append(
                IssuedCoupon(
                    coupon.id,
                    coupon.code,
                    campaign.id,
                    coupon.store_id,
                    render(offer.title, context),
                    offer.discount_text,
                    coupon.expires_at,
                    tuple(d.channel for d in deliveries),
                )
            )
        if over_shopper_limit and not issued:
            limit = {"max_offers_per_day": prefs.max_offers_per_day, "timezone": prefs.timezone}
            self._drop(event, marketing, now, "shopper_daily_limit", limit)
        return issued

    def on_ineligible(self, event: FenceEvent, now: datetime) -> None:
        """A trigger the store's state refused (closed): recorded for the campaigns it would
        have served, with the reason, and nothing more."""
        if event.reason != "store_closed":
            return
        log_ = DecisionLog(self.session)
        for campaign, _ in self._targeted(event, now):
            log_.record(
                campaign=campaign, event=event, outcome=Outcome.SUPPRESSED, reason="closed", now=now
            )

    def _targeted(self, event: FenceEvent, now: datetime) -> list[tuple[Campaign, list[Offer]]]:
        store = self.session.get(Store, event.store_id)
        tags = list(store.tags or []) if store is not None else []
        return [
            (c, offers)
            for c, offers in CampaignRepository(self.session).campaigns_for_store(
                event.store_id, tags
            )
            if event.kind in (c.triggers or ["enter"])
            and CampaignWindow(c.status, c.starts_at, c.ends_at).is_live(now)
        ]

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
        addresses = {Channel.EMAIL: device.email, Channel.PUSH: device.push_token}
        deliveries: list[Delivery] = []
        for channel, address in addresses.items():
            if not address or channel.value not in self.channels:
                continue
            if not self.gate.check(
                coupon.subject_id, Purpose.MARKETING_OFFERS, channel, now
            ).allowed:
                continue
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
