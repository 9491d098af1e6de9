"""Typed bodies of the engine's API, as the client sends and reads them (pydantic only)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Ping(BaseModel):
    """One fix. ``id`` defaults to a fresh one, which makes a retried batch harmless."""

    lon: float
    lat: float
    recorded_at: datetime
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    mock: bool = False
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)


class Device(_In):
    device_id: str
    subject_id: str
    token: str
    token_expires_at: datetime


class Token(_In):
    device_id: str
    token: str
    token_expires_at: datetime
    generation: int


class Consent(_In):
    purpose: str
    channel: str | None
    state: str
    event_id: int
    event_hash: str
    occurred_at: datetime
    valid_until: datetime | None = None


class Notice(_In):
    id: str
    purpose: str
    version: str
    language: str
    text: str
    content_hash: str
    published_at: datetime


class FenceEvent(_In):
    id: str
    kind: str
    store_id: str
    fence_id: str
    occurred_at: datetime
    details: dict[str, float] = Field(default_factory=dict)
    eligible: bool = True
    reason: str | None = None


class IssuedCoupon(_In):
    coupon_id: str
    code: str
    title: str
    discount_text: str
    store_id: str
    expires_at: datetime
    remaining_s: int
    channels: list[str]


class PingResult(_In):
    accepted: int
    ignored: dict[str, int] = Field(default_factory=dict)
    consent_event_id: int | None
    events: list[FenceEvent]
    coupons: list[IssuedCoupon]


class InboxCoupon(_In):
    coupon_id: str
    code: str
    title: str
    body: str
    discount_text: str
    store_id: str
    store_name: str | None
    issued_at: datetime
    expires_at: datetime
    remaining_s: int
    opened_at: datetime | None


class Opened(_In):
    coupon_id: str
    opened_at: datetime
    first_open: bool
    status: str


class Trigger(_In):
    event_id: str
    kind: str
    occurred_at: datetime
    fence_id: str
    details: dict[str, float] = Field(default_factory=dict)


class ConsentReliedOn(_In):
    event_id: int
    purpose: str
    channel: str | None
    state: str
    notice_version: str
    occurred_at: datetime
    entry_hash: str


class Receipt(_In):
    decided_at: datetime
    allowed: bool
    reason: str
    event_hash: str | None


class Why(_In):
    coupon_id: str
    campaign: str
    title: str
    store_id: str
    store_name: str | None
    issued_at: datetime
    expires_at: datetime
    trigger: Trigger | None
    consent: ConsentReliedOn | None
    receipt: Receipt | None
    explanation: str


class NearFence(_In):
    fence_id: str
    store_id: str
    store_name: str | None
    kind: Literal["circle", "polygon"]
    lon: float
    lat: float
    radius_m: float
    distance_m: float


class NearFences(_In):
    platform: str
    limit: int
    fences: list[NearFence]
    resync_radius_m: float | None


class Preferences(_In):
    categories: list[str] | None = None
    quiet_hours: dict[str, str] | None = None
    timezone: str = "UTC"
    max_offers_per_day: int | None = None
    updated_at: datetime | None = None


class Fence(_In):
    id: str
    kind: str
    lon: float
    lat: float
    radius_m: float | None
    geometry: dict[str, Any] | None = None
    dwell_s: int | None = None


class Store(_In):
    id: str
    name: str
    external_id: str | None
    timezone: str
    opening_hours: dict[str, list[list[str]]] | None = None
    fences: list[Fence]


class Page(_In):
    total: int
    limit: int
    offset: int


class StoreList(_In):
    items: list[Store]
    page: Page


class CampaignOffer(_In):
    id: str
    title: str
    body: str
    discount_text: str
    valid_minutes: int


class Campaign(_In):
    id: str
    name: str
    status: str
    store_ids: list[str]
    offers: list[CampaignOffer]


class RejectedRow(_In):
    row: int
    reason: str


class ImportReport(_In):
    file: str
    format: str
    total_rows: int
    imported: int
    created: int
    updated: int
    unchanged: int
    rejected_count: int
    rejected: list[RejectedRow]


class Redemption(_In):
    coupon_id: str
    code: str
    store_id: str
    title: str
    discount_text: str
    redeemed_at: datetime
