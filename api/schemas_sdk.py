"""Bodies of the SDK's offers inbox, opened callback, "why this offer", token rotation and
nearest-fences sync."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CPN = "cpn_01JDX4Q8M6T5R2W9Y3Z7A1B0C"
INSTANT = "2026-11-23T09:00:00Z"


class TokenOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "device_id": "dev_01JDX4Q8M6T5R2W9Y3Z7A1B0C",
                    "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
                    "token_expires_at": "2026-12-23T09:00:00Z",
                    "generation": 2,
                }
            ]
        }
    )

    device_id: str
    token: str
    token_expires_at: datetime
    generation: int = Field(description="the token generation; the previous one stops working")


class InboxCouponOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "coupon_id": CPN,
                    "code": "7K3QD-M9X2T",
                    "title": "Coffee break",
                    "body": "Pop in for a coffee.",
                    "discount_text": "30% off",
                    "store_id": "sto_01JDX4Q8M6T5R2W9Y3Z7A1B0C",
                    "store_name": "Corner Cafe",
                    "issued_at": INSTANT,
                    "expires_at": "2026-11-23T09:15:00Z",
                    "remaining_s": 840,
                    "opened_at": "2026-11-23T09:01:10Z",
                }
            ]
        }
    )

    coupon_id: str
    code: str
    title: str
    body: str
    discount_text: str
    store_id: str
    store_name: str | None
    issued_at: datetime
    expires_at: datetime
    remaining_s: int = Field(description="seconds left at the time of the answer")
    opened_at: datetime | None = Field(description="first time the app reported it opened")


class InboxOut(BaseModel):
    server_time: datetime = Field(description="count remaining_s down from this instant")
    items: list[InboxCouponOut]


class OpenedOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "coupon_id": CPN,
                    "opened_at": INSTANT,
                    "first_open": True,
                    "status": "issued",
                }
            ]
        }
    )

    coupon_id: str
    opened_at: datetime = Field(description="the first open; a repeated call keeps it")
    first_open: bool
    status: str = Field(description="issued, redeemed or expired")


class TriggerOut(BaseModel):
    event_id: str
    kind: str = Field(description="enter, dwell, exit or approaching")
    occurred_at: datetime
    fence_id: str
    details: dict[str, float] = Field(default_factory=dict)


class ConsentReliedOn(BaseModel):
    event_id: int
    purpose: str
    channel: str | None
    state: str
    notice_version: str
    occurred_at: datetime
    entry_hash: str = Field(description="the ledger entry's hash, as in exports")


class ReceiptOut(BaseModel):
    decided_at: datetime
    allowed: bool
    reason: str
    event_hash: str | None


class WhyOut(BaseModel):
    """Why the shopper got this offer: what they did, where, when, and the consent it used."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "coupon_id": CPN,
                    "campaign": "Coffee now",
                    "title": "Coffee break",
                    "store_id": "sto_01JDX4Q8M6T5R2W9Y3Z7A1B0C",
                    "store_name": "Corner Cafe",
                    "issued_at": INSTANT,
                    "expires_at": "2026-11-23T09:15:00Z",
                    "trigger": {
                        "event_id": "evt_01JDX4Q8M6T5R2W9Y3Z7A1B0C",
                        "kind": "enter",
                        "occurred_at": INSTANT,
                        "fence_id": "fen_01JDX4Q8M6T5R2W9Y3Z7A1B0C",
                        "details": {},
                    },
                    "consent": {
                        "event_id": 12,
                        "purpose": "marketing_offers",
                        "channel": "email",
                        "state": "confirmed",
                        "notice_version": "offers-2026-11",
                        "occurred_at": "2026-11-20T18:02:11Z",
                        "entry_hash": "9f2c...e1",
                    },
                    "receipt": {
                        "decided_at": INSTANT,
                        "allowed": True,
                        "reason": "confirmed",
                        "event_hash": "9f2c...e1",
                    },
                    "explanation": "You entered Corner Cafe at 09:00 UTC ...",
                }
            ]
        }
    )

    coupon_id: str
    campaign: str
    title: str
    store_id: str
    store_name: str | None
    issued_at: datetime
    expires_at: datetime
    trigger: TriggerOut | None = Field(description="null once the event was erased")
    consent: ConsentReliedOn | None
    receipt: ReceiptOut | None
    explanation: str


class NearFenceOut(BaseModel):
    fence_id: str
    store_id: str
    store_name: str | None
    kind: Literal["circle", "polygon"]
    lon: float = Field(description="centre of the circle to monitor")
    lat: float
    radius_m: float = Field(description="radius to monitor; a polygon's enclosing circle")
    distance_m: float = Field(description="from the position to the fence's edge; 0 inside")


class NearFencesOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "platform": "ios",
                    "limit": 20,
                    "fences": [
                        {
                            "fence_id": "fen_01JDX4Q8M6T5R2W9Y3Z7A1B0C",
                            "store_id": "sto_01JDX4Q8M6T5R2W9Y3Z7A1B0C",
                            "store_name": "Corner Cafe",
                            "kind": "circle",
                            "lon": 24.9414,
                            "lat": 60.1699,
                            "radius_m": 50.0,
                            "distance_m": 312.4,
                        }
                    ],
                    "resync_radius_m": 1450.0,
                }
            ]
        }
    )

    platform: str
    limit: int = Field(description="how many were asked for, after the OS cap")
    fences: list[NearFenceOut]
    resync_radius_m: float | None = Field(
        description="ask again once the device is this far from the position sent (the "
        "farthest fence returned); null when fewer fences than asked were in reach"
    )
