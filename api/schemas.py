"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    field_validator,
    model_validator,
)

from consent.domain import Channel, Purpose
from offers.campaigns import VARIANT_CLEARABLE, VARIANT_FIELDS
from offers.templates import InvalidTemplate, check_template


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a time zone offset, e.g. 2026-11-23T12:00:00Z")
    try:  # it is stored in UTC: years 1 and 9999 near their ends cannot be
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp is out of range in UTC (years 1 to 9999)") from None
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


def _refuse_nulls(patch: BaseModel, names: tuple[str, ...]) -> None:
    """A PATCH field sent as null that has no "none" to go back to: a 422 that says so (the
    column cannot be emptied), where it used to reach the database."""
    nulls = [
        name for name in names if name in patch.model_fields_set and getattr(patch, name) is None
    ]
    if nulls:
        raise ValueError(f"{', '.join(nulls)} cannot be null; leave a field out to keep its value")


Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Tag = Annotated[
    str,
    Field(
        min_length=1,
        max_length=40,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="lower-case letters, digits, '-' and '_'",
    ),
]
Trigger = Literal["enter", "dwell", "approaching"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel):
    total: int
    limit: int
    offset: int


# --- manager ---------------------------------------------------------------------------------


class FenceIn(Strict):
    """A circle (lon, lat, radius_m) or a GeoJSON Polygon/MultiPolygon ``geometry`` (RFC 7946)."""

    lon: Longitude | None = None
    lat: Latitude | None = None
    radius_m: float | None = Field(default=None, gt=0, le=50_000, allow_inf_nan=False)
    geometry: dict[str, Any] | None = Field(
        default=None,
        examples=[
            {
                "type": "Polygon",
                "coordinates": [[[24.94, 60.17], [24.95, 60.17], [24.95, 60.175], [24.94, 60.17]]],
            }
        ],
    )
    dwell_s: int | None = Field(
        default=None, ge=1, le=86_400, description="seconds inside before a dwell event"
    )

    @model_validator(mode="after")
    def _one_shape(self) -> FenceIn:
        circle = (self.lon, self.lat, self.radius_m)
        if self.geometry is not None:
            if any(v is not None for v in circle):
                raise ValueError(
                    "give either a circle (lon, lat, radius_m) or a geometry, not both"
                )
        elif any(v is None for v in circle):
            missing = [
                n for n, v in zip(("lon", "lat", "radius_m"), circle, strict=True) if v is None
            ]
            raise ValueError(f"a circle fence needs {', '.join(missing)} (or give a geometry)")
        return self


class StoreIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Corner Cafe",
                    "external_id": "osm-node-4412",
                    "timezone": "Europe/Helsinki",
                    "opening_hours": {"mon": [["08:00", "20:00"]], "sat": [["10:00", "16:00"]]},
                    "tags": ["city", "cafe"],
                    "fence": {"lon": 24.9414, "lat": 60.1699, "radius_m": 40},
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=200)
    external_id: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str = Field(default="UTC", min_length=1, max_length=64, examples=["Europe/Helsinki"])
    opening_hours: dict[str, list[list[str]]] | None = Field(
        default=None,
        examples=[{"mon": [["08:00", "20:00"]], "sat": [["10:00", "16:00"]]}],
        description="per day, [open, close] in the store's time zone; absent = always open",
    )
    tags: list[Tag] = Field(default_factory=list, max_length=20, examples=[["city", "cafe"]])
    fence: FenceIn


class StorePatch(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tags": ["city", "cafe", "lunch"],
                    "opening_hours": {"mon": [["08:00", "20:00"]], "sat": [["10:00", "16:00"]]},
                }
            ]
        }
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[Tag] | None = Field(default=None, max_length=20)
    opening_hours: dict[str, list[list[str]]] | None = None

    @model_validator(mode="after")
    def _kept(self) -> StorePatch:
        _refuse_nulls(self, ("name",))
        return self


class FenceOut(BaseModel):
    id: str
    kind: str
    lon: float
    lat: float
    radius_m: float | None
    geometry: dict[str, Any] | None = None
    dwell_s: int | None = None


class StoreOut(BaseModel):
    id: str
    name: str
    external_id: str | None
    timezone: str
    opening_hours: dict[str, list[list[str]]] | None = None
    tags: list[str] = Field(default_factory=list)
    fences: list[FenceOut]


class StoreList(BaseModel):
    items: list[StoreOut]
    page: Page


OpeningHoursIn = dict[str, list[list[str]]]
RuleMinutes = Annotated[int, Field(ge=1, le=1440)]


def _template(value: str | None) -> str | None:
    if value is not None:
        try:
            check_template(value)
        except InvalidTemplate as exc:
            raise ValueError(exc.message) from exc
    return value


class OfferIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "{discount} at {store}",
                    "body": "Only until {expires_at}.",
                    "discount_text": "30% off any coffee",
                    "valid_minutes": 15,
                    "discount_amount": 150,
                }
            ]
        }
    )

    title: str = Field(
        min_length=1,
        max_length=200,
        description="template: {store}, {discount}, {minutes}, {expires_at}, {campaign}",
        examples=["{discount} at {store}"],
    )
    body: str = Field(min_length=1, max_length=2000)
    discount_text: str = Field(min_length=1, max_length=100, examples=["30% off any coffee"])
    valid_minutes: int = Field(ge=1, le=1440)
    validity_rule: Literal["fixed", "travel"] = Field(
        default="fixed",
        description="fixed: valid_minutes; travel: a pass-by's ETA + decision_window_minutes "
        "(default valid_minutes), at most max_valid_minutes",
    )
    decision_window_minutes: RuleMinutes | None = None
    max_valid_minutes: RuleMinutes | None = None
    discount_amount: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="what one coupon costs, in minor currency units (for max_liability)",
    )

    @model_validator(mode="after")
    def _travel_needs_a_cap(self) -> OfferIn:
        if self.validity_rule == "travel" and self.max_valid_minutes is None:
            raise ValueError("validity_rule 'travel' needs max_valid_minutes (the cap)")
        window = self.decision_window_minutes or self.valid_minutes
        if self.max_valid_minutes is not None and window > self.max_valid_minutes:
            raise ValueError(
                "max_valid_minutes must be at least the decision window "
                "(decision_window_minutes, or valid_minutes)"
            )
        return self

    _templates = field_validator("title", "body")(_template)


VariantName = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9 _-]+$")]


class VariantIn(OfferIn):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "B",
                    "title": "{store}: {discount}",
                    "body": "Pop in within {minutes} minutes.",
                    "discount_text": "2 for 1",
                    "valid_minutes": 10,
                    "validity_rule": "travel",
                    "max_valid_minutes": 25,
                    "weight": 1,
                }
            ]
        }
    )

    name: VariantName = "A"
    weight: int = Field(default=1, ge=0, le=1000, description="share under fixed selection")


class VariantPatch(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"weight": 3, "active": True}]})

    name: VariantName | None = None
    title: str | None = Field(default=None, min_length=1, max_length=200)
    body: str | None = Field(default=None, min_length=1, max_length=2000)
    discount_text: str | None = Field(default=None, min_length=1, max_length=100)
    valid_minutes: int | None = Field(default=None, ge=1, le=1440)
    validity_rule: Literal["fixed", "travel"] | None = None
    decision_window_minutes: RuleMinutes | None = None
    max_valid_minutes: RuleMinutes | None = None
    discount_amount: int | None = Field(default=None, ge=0, le=1_000_000_000)
    weight: int | None = Field(default=None, ge=0, le=1000)
    active: bool | None = None

    _templates = field_validator("title", "body")(_template)

    @model_validator(mode="after")
    def _kept(self) -> VariantPatch:
        _refuse_nulls(self, tuple(f for f in VARIANT_FIELDS if f not in VARIANT_CLEARABLE))
        return self


class CampaignPatch(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"triggers": ["enter", "approaching"], "holdout_share": 0.1}]
        }
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    store_ids: list[str] | None = Field(default=None, max_length=1000)
    store_tags: list[Tag] | None = Field(default=None, max_length=20)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    daily_cap_per_shopper: int | None = Field(default=None, ge=1, le=100)
    category: str | None = Field(default=None, min_length=1, max_length=60)
    triggers: list[Trigger] | None = Field(default=None, min_length=1, max_length=3)
    holdout_share: float | None = Field(default=None, ge=0, le=0.5)
    selection: Literal["fixed", "adaptive"] | None = None
    visit_window_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)

    @model_validator(mode="after")
    def _kept(self) -> CampaignPatch:
        names = ("name", "daily_cap_per_shopper", "holdout_share", "selection")
        _refuse_nulls(self, (*names, "visit_window_minutes"))
        return self


class CampaignRulesIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ends_at": "2026-12-31T20:00:00Z",
                    "active_hours": {"mon": [["11:00", "14:00"]], "sat": [["10:00", "18:00"]]},
                    "store_cooldown_minutes": 60,
                    "max_coupons": 5000,
                }
            ]
        }
    )

    """Schedule, caps, cooldown and budget of a campaign (every field optional; null clears)."""

    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    active_hours: OpeningHoursIn | None = Field(
        default=None,
        examples=[{"mon": [["11:00", "14:00"]], "sat": [["10:00", "18:00"]]}],
        description="when the campaign issues, per day in each store's time zone; absent = all day",
    )
    daily_cap_per_shopper: int | None = Field(
        default=None, ge=1, le=100, description="coupons of this campaign per shopper per day"
    )
    store_cooldown_minutes: int | None = Field(
        default=None,
        ge=0,
        le=1440,
        description="no new coupon for a shopper at the same store within this many minutes",
    )
    max_coupons: int | None = Field(default=None, ge=1, le=100_000_000)
    max_liability: int | None = Field(
        default=None,
        ge=1,
        le=10**15,
        description="most discount (minor currency units) in coupons not expired",
    )


class CampaignIn(CampaignRulesIn):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Lunch walk-by",
                    "store_ids": ["st_68313f0e591961edd2c8eb14c1168a86"],
                    "store_tags": ["city"],
                    "triggers": ["enter", "approaching"],
                    "daily_cap_per_shopper": 1,
                    "category": "coffee",
                    "starts_at": "2026-12-01T08:00:00Z",
                    "active_hours": {"mon": [["11:00", "14:00"]]},
                    "max_liability": 500000,
                    "offer": {
                        "title": "{discount} at {store}",
                        "body": "Only until {expires_at}.",
                        "discount_text": "30% off any coffee",
                        "valid_minutes": 15,
                        "discount_amount": 150,
                    },
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=200)
    store_ids: list[str] = Field(default_factory=list, max_length=1000)
    store_tags: list[Tag] = Field(
        default_factory=list, max_length=20, description="stores with any of these tags"
    )
    triggers: list[Trigger] = Field(default=["enter"], min_length=1, max_length=3)
    holdout_share: float | None = Field(
        default=None, ge=0, le=0.5, description="held-out share (default from settings, 0.1)"
    )
    selection: Literal["fixed", "adaptive"] = Field(
        default="fixed", description="variants by weight, or adaptive (Thompson sampling)"
    )
    visit_window_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    variants: list[VariantIn] | None = Field(default=None, min_length=1, max_length=10)
    daily_cap_per_shopper: int | None = Field(default=1, ge=1, le=100)
    category: str | None = Field(
        default=None,
        min_length=1,
        max_length=60,
        examples=["coffee"],
        description="shoppers who chose categories get only theirs",
    )
    offer: OfferIn | None = Field(default=None, description="one offer (or give variants)")

    @model_validator(mode="after")
    def _offer_or_variants(self) -> CampaignIn:
        if (self.offer is None) == (self.variants is None):
            raise ValueError("give either one offer or a list of variants")
        if not self.store_ids and not self.store_tags:
            raise ValueError("a campaign needs store_ids or store_tags (or both)")
        return self


class OfferOut(BaseModel):
    id: str
    title: str
    body: str
    discount_text: str
    valid_minutes: int
    validity_rule: str = "fixed"
    decision_window_minutes: int | None = None
    max_valid_minutes: int | None = None
    discount_amount: int = 0
    name: str = "A"
    weight: int = 1
    active: bool = True


class BudgetOut(BaseModel):
    max_coupons: int | None
    max_liability: int | None
    issued_count: int = Field(description="coupons counted against the budget")
    reserved_liability: int = Field(description="discount held by coupons not expired")


class CampaignOut(BaseModel):
    id: str
    name: str
    status: str
    starts_at: datetime | None
    ends_at: datetime | None
    daily_cap_per_shopper: int
    category: str | None = None
    active_hours: dict[str, list[list[str]]] | None = None
    store_cooldown_minutes: int = 0
    budget: BudgetOut | None = None
    store_ids: list[str]
    store_tags: list[str] = Field(default_factory=list)
    triggers: list[str] = Field(default_factory=lambda: ["enter"])
    holdout_share: float = 0.1
    selection: str = "fixed"
    visit_window_minutes: int = 120
    offers: list[OfferOut]


class CampaignList(BaseModel):
    items: list[CampaignOut]
    page: Page


class NoticeIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "purpose": "marketing_offers",
                    "version": "offers-2026-11",
                    "language": "en",
                    "text": "We send you short-lived offers by the channels you choose.",
                }
            ]
        }
    )

    purpose: Purpose
    version: str = Field(min_length=1, max_length=64, examples=["offers-2026-11"])
    language: str = Field(default="en", min_length=2, max_length=16)
    text: str = Field(min_length=1, max_length=20_000)


class NoticeOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "ntc_2b7e1c0d9f8a4e3b6c5d4a3f2e1d0c9b",
                    "purpose": "marketing_offers",
                    "version": "offers-2026-11",
                    "language": "en",
                    "text": "We send you short-lived offers by the channels you choose.",
                    "content_hash": "9f2c41d07be35a6e8d1f0c2b4a6e8d0f"
                    "1c3e5a7b9d2f4a6c8e0b2d4f6a8c0e2a",
                    "published_at": "2026-11-01T08:00:00Z",
                }
            ]
        }
    )

    id: str
    purpose: str
    version: str
    language: str
    text: str
    content_hash: str
    published_at: datetime


# --- sdk -------------------------------------------------------------------------------------


class DeviceIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_ref": "app-user-5f3a9c",
                    "platform": "android",
                    "push_token": "fcm-registration-token",
                    "email": "shopper@example.com",
                }
            ]
        }
    )

    customer_ref: str = Field(
        min_length=1, max_length=200, description="the app's own pseudonymous id"
    )
    platform: Literal["ios", "android", "web"]
    push_token: str | None = Field(default=None, min_length=1, max_length=4096)
    email: EmailStr | None = None


class DeviceOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "device_id": "dev_4f1c2a9e0b7d4c3e8a6f5b2d1c0e9f8a",
                    "subject_id": "sub_9a8b7c6d5e4f40312a1b2c3d4e5f6071",
                    "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
                    "token_expires_at": "2026-12-23T09:00:00Z",
                }
            ]
        }
    )

    device_id: str
    subject_id: str
    token: str
    token_expires_at: datetime


class ConsentIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "purpose": "marketing_offers",
                    "channel": "email",
                    "granted": True,
                    "notice_version": "offers-2026-11",
                }
            ]
        }
    )

    purpose: Purpose
    channel: Channel | None = None
    granted: bool
    notice_version: str = Field(min_length=1, max_length=64, examples=["offers-2026-11"])


class ConsentOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "purpose": "marketing_offers",
                    "channel": "email",
                    "state": "pending_confirmation",
                    "event_id": 1042,
                    "event_hash": "5ae65faa09b8c1d2e3f405162738495a"
                    "6b7c8d9e0f1a2b3c4d5e6f708192a3b4",
                    "occurred_at": "2026-11-23T09:00:00Z",
                    "valid_until": "2027-11-23T09:00:00Z",
                }
            ]
        }
    )

    purpose: str
    channel: str | None
    state: str
    event_id: int
    event_hash: str
    occurred_at: datetime
    valid_until: datetime | None = None


class PingIn(Strict):
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the app's id for this fix; a repeated id is ignored",
    )
    lon: Longitude
    lat: Latitude
    accuracy_m: float | None = Field(default=None, ge=0, le=100_000, allow_inf_nan=False)
    speed_mps: float | None = Field(default=None, ge=0, le=350, allow_inf_nan=False)
    heading_deg: float | None = Field(default=None, ge=0, lt=360, allow_inf_nan=False)
    mock: bool = Field(default=False, description="the OS flagged this fix as a mock location")
    recorded_at: AwareDatetime


class PingBatchIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "pings": [
                        {
                            "id": "fix-000181",
                            "lon": 24.9414,
                            "lat": 60.1699,
                            "accuracy_m": 8,
                            "speed_mps": 1.4,
                            "heading_deg": 92,
                            "mock": False,
                            "recorded_at": "2026-11-23T09:00:00Z",
                        },
                        {
                            "id": "fix-000182",
                            "lon": 24.9416,
                            "lat": 60.1699,
                            "accuracy_m": 9,
                            "recorded_at": "2026-11-23T09:00:10Z",
                        },
                    ]
                }
            ]
        }
    )

    pings: list[PingIn] = Field(min_length=1, max_length=1000)


class EventOut(BaseModel):
    id: str
    kind: str
    store_id: str
    fence_id: str
    occurred_at: datetime
    details: dict[str, float] = Field(
        default_factory=dict, description="approaching: eta_s, distance_m; exit: duration_s"
    )
    eligible: bool = True
    reason: str | None = None


class CouponOut(BaseModel):
    coupon_id: str
    code: str
    title: str
    discount_text: str
    store_id: str
    expires_at: datetime
    remaining_s: int
    channels: list[str]


class PingResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "accepted": 2,
                    "ignored": {},
                    "consent_event_id": 1041,
                    "events": [
                        {
                            "id": "ev_3c2b1a09f8e7d6c5b4a3928170615243",
                            "kind": "enter",
                            "store_id": "st_68313f0e591961edd2c8eb14c1168a86",
                            "fence_id": "fn_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
                            "occurred_at": "2026-11-23T09:00:10Z",
                            "details": {},
                            "eligible": True,
                            "reason": None,
                        }
                    ],
                    "coupons": [
                        {
                            "coupon_id": "cpn_6ae8a96d53bdf476ea0861b3726a94cd",
                            "code": "3KTNE-FX3SM",
                            "title": "Coffee break",
                            "discount_text": "30% off",
                            "store_id": "st_68313f0e591961edd2c8eb14c1168a86",
                            "expires_at": "2026-11-23T09:15:10Z",
                            "remaining_s": 900,
                            "channels": ["push"],
                        }
                    ],
                }
            ]
        }
    )

    accepted: int
    ignored: dict[str, int] = Field(
        default_factory=dict,
        description="fixes stored but not used, by reason: stale, duplicate, inaccurate, jump, "
        "mock, future",
    )
    consent_event_id: int | None
    events: list[EventOut]
    coupons: list[CouponOut]


# --- pos -------------------------------------------------------------------------------------


class RedemptionIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"code": "3KTNE-FX3SM", "store_id": "st_68313f0e591961edd2c8eb14c1168a86"}]
        }
    )

    code: str = Field(min_length=4, max_length=32, examples=["ABCDE-12345"])
    store_id: str = Field(min_length=1, max_length=40)


class RedemptionOut(BaseModel):
    coupon_id: str
    code: str
    store_id: str
    title: str
    discount_text: str
    redeemed_at: datetime


class VoidIn(RedemptionIn):
    """The coupon whose redemption at this store is undone."""


class VoidOut(BaseModel):
    coupon_id: str
    code: str
    store_id: str
    status: Literal["issued", "expired"] = Field(
        description="issued: still valid and redeemable again; expired: its time is over"
    )
    expires_at: datetime
    voided_at: datetime
