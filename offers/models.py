"""Campaigns, offers, coupons and their deliveries (the outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime

BigInt = BigInteger().with_variant(Integer(), "sqlite")


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    daily_cap_per_shopper: Mapped[int] = mapped_column(Integer, default=1)
    # An offer category a shopper can choose in their preferences; None: a general offer.
    category: Mapped[str | None] = mapped_column(String(60))
    # Hours (opening-hours shape, read in each store's zone) when the campaign issues; None: always.
    active_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # No second coupon (of any campaign) for a shopper at the same store within this many minutes.
    store_cooldown_minutes: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Budget: at most this many coupons, and at most this liability (minor currency units) in
    # coupons not expired. The two counters are the durable truth, moved by conditional UPDATEs.
    max_coupons: Mapped[int | None] = mapped_column(Integer)
    max_liability: Mapped[int | None] = mapped_column(BigInt)
    issued_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    reserved_liability: Mapped[int] = mapped_column(BigInt, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Fence events that trigger the campaign: any of "enter", "dwell", "approaching".
    triggers: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["enter"])
    # Stores carrying any of these tags are targeted too (besides campaign_stores).
    store_tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    holdout_share: Mapped[float] = mapped_column(Float, default=0.1)
    # "fixed": variants drawn by weight; "adaptive": Thompson sampling on outcomes.
    selection: Mapped[str] = mapped_column(String(16), default="fixed")
    visit_window_minutes: Mapped[int] = mapped_column(Integer, default=120)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CampaignStore(Base):
    __tablename__ = "campaign_stores"

    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    store_id: Mapped[str] = mapped_column(
        ForeignKey("stores.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Offer(Base):
    __tablename__ = "offers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    discount_text: Mapped[str] = mapped_column(String(100))
    valid_minutes: Mapped[int] = mapped_column(Integer)
    validity_rule: Mapped[str] = mapped_column(String(16), server_default=text("'fixed'"))
    decision_window_minutes: Mapped[int | None] = mapped_column(Integer)
    max_valid_minutes: Mapped[int | None] = mapped_column(Integer)
    # What one redeemed coupon costs the brand, in minor currency units (for the liability budget).
    discount_amount: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A variant of the campaign's offer: its label and its weight under fixed selection.
    name: Mapped[str] = mapped_column(String(60), default="A")
    weight: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Coupon(Base):
    __tablename__ = "coupons"
    __table_args__ = (
        Index("ix_coupons_subject_issued", "subject_id", "issued_at"),
        # The expiry transition finds issued coupons past expires_at without a table scan.
        Index("ix_coupons_status_expires", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    offer_id: Mapped[str] = mapped_column(ForeignKey("offers.id"))
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), index=True)
    store_id: Mapped[str] = mapped_column(ForeignKey("stores.id"))
    subject_id: Mapped[str] = mapped_column(String(40))
    device_id: Mapped[str] = mapped_column(String(40))
    trigger_event_id: Mapped[str] = mapped_column(String(40))
    consent_event_id: Mapped[int] = mapped_column(BigInt)
    status: Mapped[str] = mapped_column(String(16), default="issued")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What this coupon would cost (its offer's discount_amount); reserved in a budgeted campaign
    # at issue and released once, when it expires unredeemed.
    liability: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The first time the shopper opened it in the app (the SDK's opened callback).
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    """The outbox: one row per coupon and channel, written in the coupon's transaction."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("coupon_id", "channel", "kind", name="uq_deliveries_coupon_channel_kind"),
        Index("ix_deliveries_due", "status", "due_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    coupon_id: Mapped[str] = mapped_column(ForeignKey("coupons.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    # "offer" (the coupon itself) or "reminder" (sent N minutes before expiry).
    kind: Mapped[str] = mapped_column(String(16), default="offer", server_default="offer")
    address: Mapped[str] = mapped_column(String(4096))
    status: Mapped[str] = mapped_column(String(24), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The scheduler lease's fencing token under which the delivery was claimed: a claim made
    # under an older token belongs to a deposed leader and may be taken over at once.
    claim_token: Mapped[int | None] = mapped_column(BigInt)
    last_error: Mapped[str | None] = mapped_column(Text)
    consent_event_id: Mapped[int | None] = mapped_column(BigInt)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TillAnswer(Base):
    """A point-of-sale answer stored under the till's ``Idempotency-Key``: a retry gets it again."""

    __tablename__ = "till_answers"

    terminal: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class SchedulerLease(Base):
    """Who runs the timed work: one row per lease name, held until ``expires_at`` and renewed
    by the holder's heartbeat. ``token`` grows on every change of holder (a fencing token)."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    token: Mapped[int] = mapped_column(BigInt)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OfferDecision(Base):
    """What one trigger did for one campaign: suppressed (with the reason), held out, or issued.

    Written for the treated and the held-out group alike, so visits and purchases can be
    compared between them. ``subject_id`` is empty for a shopper without marketing consent.
    """

    __tablename__ = "offer_decisions"
    __table_args__ = (
        Index("ix_offer_decisions_subject_store", "subject_id", "store_id", "trigger_at"),
        Index("ix_offer_decisions_campaign_decided", "campaign_id", "decided_at"),
    )

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    offer_id: Mapped[str | None] = mapped_column(String(40))
    store_id: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(40))
    trigger_event_id: Mapped[str] = mapped_column(String(40))
    trigger_kind: Mapped[str] = mapped_column(String(16))
    trigger_at: Mapped[datetime] = mapped_column(UTCDateTime())
    outcome: Mapped[str] = mapped_column(String(16))  # suppressed | held_out | issued
    reason: Mapped[str | None] = mapped_column(String(40))
    coupon_id: Mapped[str | None] = mapped_column(String(40), index=True)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    visit_until: Mapped[datetime] = mapped_column(UTCDateTime())
    visited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    purchased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CouponOpen(Base):
    """The first time a shopper opened a coupon (tracked link or app callback)."""

    __tablename__ = "coupon_opens"

    coupon_id: Mapped[str] = mapped_column(
        ForeignKey("coupons.id", ondelete="CASCADE"), primary_key=True
    )
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    via: Mapped[str] = mapped_column(String(16))
