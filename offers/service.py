"""Offer decisions: on a fence event, which coupons to issue and which deliveries to queue."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from consent.domain import Channel, ConsentDecision, Purpose
from consent.gate import ConsentGate
from consent.models import Device
from consent.preferences import OfferPreferences, PreferencesRepository
from core.db import on_commit
from core.ids import new_id
from core.state import HotState
from geo.hours import is_open
from geo.index import StoreInfo
from geo.models import FenceEvent
from offers.channel_choice import choose_channels
from offers.decisions import DecisionLog, Outcome, VariantPicker
from offers.domain import (
    CampaignRules,
    CampaignWindow,
    CouponStatus,
    DeliveryStatus,
    Refusal,
    Validity,
    ValidityRule,
    cap_key,
    headline_refusal,
    new_coupon_code,
    shopper_cap_key,
    window_refusal,
)
from offers.eligibility import CAP_TTL_S, IssueCounter, IssueLimits, campaign_count
from offers.experiments import is_held_out
from offers.live_campaigns import LiveCampaigns
from offers.models import Campaign, Coupon, Delivery, Offer
from offers.templates import TemplateContext, render

log = logging.getLogger(__name__)
UNLIMITED = 1_000_000
# The funnel's suppression reasons, coarser than the refusals in the consent receipt.
SUPPRESSION_REASONS = {
    Refusal.CAMPAIGN_DAILY_CAP: "cap",
    Refusal.SHOPPER_DAILY_LIMIT: "shopper_daily_limit",
    Refusal.STORE_COOLDOWN: "cooldown",
    Refusal.STORE_CLOSED: "closed",
    Refusal.CATEGORY_NOT_WANTED: "category",
    Refusal.BUDGET_COUPONS: "budget",
    Refusal.BUDGET_LIABILITY: "budget",
}


def _rules(campaign: Campaign) -> CampaignRules:
    return CampaignRules(
        campaign.active_hours,
        campaign.store_cooldown_minutes or 0,
        campaign.max_coupons,
        campaign.max_liability,
    )


def _schedule_refusal(campaign: Campaign, store: StoreInfo, now: datetime) -> Refusal | None:
    window = CampaignWindow(campaign.status, campaign.starts_at, campaign.ends_at)
    refusal = window_refusal(window, now)
    hours = campaign.active_hours
    if refusal is None and hours is not None and not is_open(hours, store.timezone, now):
        return Refusal.OUTSIDE_CAMPAIGN_HOURS
    return refusal


def _remaining_eta(event: FenceEvent, now: datetime) -> float:
    """Seconds until the predicted arrival, from now (0 for a shopper already there)."""
    eta = float((event.details or {}).get("eta_s", 0.0)) if event.kind == "approaching" else 0.0
    return max(0.0, eta - max(0.0, (now - event.occurred_at).total_seconds()))


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
        limits: IssueLimits | None = None,
        *,
        campaigns: LiveCampaigns,
        stores: Mapping[str, StoreInfo],
        picker: VariantPicker | None = None,
        holdout_secret: bytes = b"",
    ) -> None:
        self.session = session
        self.picker = picker or VariantPicker()
        self.secret = holdout_secret
        self.state = state
        self.channels = channels
        self.enqueue_delivery = enqueue_delivery
        self.limits = limits or IssueLimits()
        self.gate = ConsentGate(session, state)
        self.counter = IssueCounter(session, state)
        # One issuer serves one batch in one transaction: what the triggers of the batch share
        # (their stores' campaigns, the shopper's preferences) is read once.
        self._campaigns: dict[str, list[tuple[Campaign, list[Offer]]]] = {}
        self._preferences: dict[str, OfferPreferences] = {}
        # campaigns and stores come from memory: ``offers.live_campaigns``, the fence index
        self.live = campaigns
        self.stores = stores

    def prefetch(self, store_ids: Collection[str]) -> None:
        """The live campaigns of the stores of the coming triggers, looked up at once."""
        wanted = [s for s in store_ids if s not in self._campaigns]
        if not wanted:
            return
        tags = {s: list(self.stores[s].tags) for s in wanted if s in self.stores}
        self._campaigns.update(self.live.current().for_stores(tags))
        for store_id in wanted:  # a store the fence index does not know serves no campaign
            self._campaigns.setdefault(store_id, [])

    def _prefs(self, subject_id: str) -> OfferPreferences:
        if subject_id not in self._preferences:
            self._preferences[subject_id] = PreferencesRepository(self.session).get(subject_id)
        return self._preferences[subject_id]

    def on_enter(self, event: FenceEvent, device: Device, now: datetime) -> list[IssuedCoupon]:
        return self.on_trigger(event, lambda: device, now)

    def on_trigger(
        self, event: FenceEvent, device_of: Callable[[], Device], now: datetime
    ) -> list[IssuedCoupon]:
        """Coupons for a trigger (``enter``, ``dwell``, or a pass-by ``approaching`` with its
        ``eta_s``) at a store, for every live campaign that targets the store (directly or by
        tag) and listens for the event's kind.

        Without marketing consent nothing is issued; in the shopper's quiet hours the offer is
        dropped (never deferred: an exploding offer later would be for a place they have left).
        Then, per campaign: its schedule (window and hours in the store's zone), the store open
        at the (predicted) arrival, the shopper's categories, the holdout (drawn after the
        campaign's own daily cap, before and independently of the variant choice), the caps per
        campaign and per shopper per day, the store cooldown and the budget. Every refusal is
        recorded in the consent receipt of the event; when nothing is issued the event shows
        ``eligible: false`` with the main reason. Each (trigger, campaign) leaves one decision:
        suppressed with its reason, held out, or issued."""
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
        prefs = self._prefs(event.subject_id)
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
        store = self.stores[event.store_id]
        eta_s = _remaining_eta(event, now)
        if not is_open(store.opening_hours, store.timezone, now + timedelta(seconds=eta_s)):
            self._drop(event, marketing, now, Refusal.STORE_CLOSED.value, {"eta_s": eta_s})
            for campaign, _ in targeted:
                log_.record(
                    campaign=campaign,
                    event=event,
                    outcome=Outcome.SUPPRESSED,
                    reason="closed",
                    now=now,
                )
            return []
        local_day = prefs.local_day(now)
        day = prefs.day_bounds(local_day)
        shopper_key = shopper_cap_key(event.subject_id, local_day)
        shopper_limit = min(prefs.max_offers_per_day or UNLIMITED, self.limits.shopper_daily_cap)
        issued: list[IssuedCoupon] = []
        refusals: list[tuple[str, Refusal]] = []
        for campaign, offers in targeted:
            refusal = _schedule_refusal(campaign, store, now)
            if refusal is None and not prefs.wants_category(campaign.category):
                refusal = Refusal.CATEGORY_NOT_WANTED
            if refusal is None and is_held_out(
                self.secret, campaign.id, event.subject_id, campaign.holdout_share
            ):
                # Held out under the campaign's own daily cap, like the treated, so both groups
                # count the same triggers; nothing is sent and no other count is taken.
                key = cap_key(event.subject_id, campaign.id, local_day)
                seed = partial(campaign_count, self.session, event.subject_id, campaign.id, day)
                if self.state.incr_within(key, campaign.daily_cap_per_shopper, CAP_TTL_S, seed):
                    log_.record(campaign=campaign, event=event, outcome=Outcome.HELD_OUT, now=now)
                    continue
                refusal = Refusal.CAMPAIGN_DAILY_CAP
            offer = self.picker.pick(self.session, campaign, offers, now)
            if refusal is None:
                refusal = self.counter.take(
                    subject_id=event.subject_id,
                    store_id=event.store_id,
                    campaign_id=campaign.id,
                    campaign_cap=campaign.daily_cap_per_shopper,
                    shopper_key=shopper_key,
                    shopper_cap=shopper_limit,
                    rules=_rules(campaign),
                    liability=offer.discount_amount,
                    local_day=local_day,
                    day=day,
                    now=now,
                )
            if refusal is not None:
                refusals.append((campaign.id, refusal))
                log_.record(
                    campaign=campaign,
                    event=event,
                    outcome=Outcome.SUPPRESSED,
                    reason=SUPPRESSION_REASONS.get(refusal, refusal.value),
                    now=now,
                )
                continue
            coupon = self._issue(event, device_of(), campaign, offer, marketing, eta_s, now)
            log_.record(
                campaign=campaign,
                event=event,
                outcome=Outcome.ISSUED,
                offer_id=offer.id,
                coupon_id=coupon.coupon_id,
                now=now,
            )
            issued.append(coupon)
        if refusals:
            self._record_refusals(event, marketing, now, refusals, issued, prefs.timezone)
        return issued

    def _issue(
        self,
        event: FenceEvent,
        device: Device,
        campaign: Campaign,
        offer: Offer,
        marketing: ConsentDecision,
        eta_s: float,
        now: datetime,
    ) -> IssuedCoupon:
        validity = Validity(
            ValidityRule(offer.validity_rule),
            offer.valid_minutes,
            offer.decision_window_minutes,
            offer.max_valid_minutes,
        )
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
            expires_at=validity.expiry(now, eta_s if event.kind == "approaching" else 0.0),
            liability=offer.discount_amount,
        )
        self.session.add(coupon)
        self.session.flush()
        self.gate.receipt(event.subject_id, "offer", marketing, now, ref=coupon.id)
        deliveries = self._queue_deliveries(coupon, device, now)
        context = TemplateContext(
            store=self.stores[event.store_id].name,
            discount=offer.discount_text,
            minutes=offer.valid_minutes,
            expires_at=coupon.expires_at,
            campaign=campaign.name,
        )
        return IssuedCoupon(
            coupon.id,
            coupon.code,
            campaign.id,
            coupon.store_id,
            render(offer.title, context),
            offer.discount_text,
            coupon.expires_at,
            tuple(d.channel for d in deliveries),
        )

    def _record_refusals(
        self,
        event: FenceEvent,
        marketing: ConsentDecision,
        now: datetime,
        refusals: list[tuple[str, Refusal]],
        issued: list[IssuedCoupon],
        timezone: str,
    ) -> None:
        listed = [{"campaign_id": c, "reason": r.value} for c, r in refusals]
        details: dict[str, Any] = {"refusals": listed, "timezone": timezone}
        if issued:
            self.gate.receipt(
                event.subject_id, "offer", marketing, now, ref=event.id, details=details
            )
            return
        self._drop(event, marketing, now, headline_refusal([r for _, r in refusals]), details)

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
        self.prefetch([event.store_id])
        return [
            (c, offers)
            for c, offers in self._campaigns[event.store_id]
            # the campaign's window is checked per campaign, so a refusal names it
            if event.kind in (c.triggers or ["enter"])
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
