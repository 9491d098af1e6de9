"""Pure offer rules: coupon codes, validity windows, campaign schedules, caps and cooldown keys,
redemption outcomes."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from core.errors import EngineError, InvalidInput, NotFound

# Crockford base32: no I, L, O, U, so a code read aloud at the till cannot be misheard.
CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10  # 10 symbols x 5 bits = 50 bits of randomness
_READ_AS = str.maketrans({"I": "1", "L": "1", "O": "0", "-": None, " ": None})
MAX_VALID_MINUTES = 24 * 60


class CouponStatus(StrEnum):
    ISSUED = "issued"
    REDEEMED = "redeemed"
    EXPIRED = "expired"


class ValidityRule(StrEnum):
    """How long a coupon lives: ``fixed`` minutes, or ``travel``: sized to the shopper's trip
    (the predicted ETA of a pass-by plus a decision window, capped)."""

    FIXED = "fixed"
    TRAVEL = "travel"


class Refusal(StrEnum):
    """Why an offer was not issued; recorded on the fence event and in the consent receipt."""

    CAMPAIGN_NOT_STARTED = "campaign_not_started"
    CAMPAIGN_ENDED = "campaign_ended"
    CAMPAIGN_INACTIVE = "campaign_inactive"
    OUTSIDE_CAMPAIGN_HOURS = "outside_campaign_hours"
    STORE_CLOSED = "store_closed"
    STALE_TRIGGER = "stale_trigger"  # an enter or dwell the engine heard of too late
    ARRIVAL_PASSED = "arrival_passed"  # an approach whose predicted arrival is behind us
    CATEGORY_NOT_WANTED = "category_not_wanted"
    CAMPAIGN_DAILY_CAP = "campaign_daily_cap"
    SHOPPER_DAILY_LIMIT = "shopper_daily_limit"
    STORE_COOLDOWN = "store_cooldown"
    BUDGET_COUPONS = "budget_coupons_exhausted"
    BUDGET_LIABILITY = "budget_liability_exhausted"


# When no campaign issued, the event shows the refusal that says most about the shopper.
REFUSAL_PRECEDENCE = (
    Refusal.SHOPPER_DAILY_LIMIT,
    Refusal.STORE_COOLDOWN,
    Refusal.STORE_CLOSED,
)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    EXPIRED_UNDELIVERED = "expired_undelivered"
    NO_CONSENT = "no_consent"
    CANCELLED = "cancelled"  # a reminder no longer needed (the coupon was redeemed)


class DeliveryKind(StrEnum):
    OFFER = "offer"
    REMINDER = "reminder"


FINAL_DELIVERY_STATES = frozenset(
    {
        DeliveryStatus.CANCELLED,
        DeliveryStatus.SENT,
        DeliveryStatus.FAILED,
        DeliveryStatus.EXPIRED_UNDELIVERED,
        DeliveryStatus.NO_CONSENT,
    }
)


class CouponUnknown(NotFound):
    """Unknown code and wrong store look the same from the till: nothing to learn by guessing."""

    code = "coupon_not_found"


class CampaignNotFound(NotFound):
    code = "campaign_not_found"


class CouponAlreadyRedeemed(EngineError):
    code = "coupon_already_redeemed"


class CouponExpired(EngineError):
    code = "coupon_expired"


class CouponNotRedeemed(EngineError):
    """A void for a coupon that has no redemption to undo (or one older than the void window)."""

    code = "coupon_not_redeemed"


class InvalidCampaign(InvalidInput):
    code = "invalid_campaign"


class TooManyAttempts(EngineError):
    """Lockout after repeated failed lookups; ``retry_after_s`` says when to try again."""

    code = "too_many_attempts"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IdempotencyKeyReused(InvalidInput):
    code = "idempotency_key_reused"


def new_coupon_code() -> str:
    return "".join(secrets.choice(CROCKFORD_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(raw: str) -> str:
    """What a cashier typed -> the stored form (case, hyphens, I/L/O read as 1/1/0)."""
    return raw.strip().upper().translate(_READ_AS)


def format_code(code: str) -> str:
    """``ABCDE12345`` -> ``ABCDE-12345`` for people."""
    return f"{code[:5]}-{code[5:]}"


def coupon_expiry(issued_at: datetime, valid_minutes: int) -> datetime:
    if not 1 <= valid_minutes <= MAX_VALID_MINUTES:
        raise InvalidCampaign(f"valid_minutes must be between 1 and {MAX_VALID_MINUTES}")
    return issued_at + timedelta(minutes=valid_minutes)


@dataclass(frozen=True, slots=True)
class Validity:
    """An offer's validity rule. ``fixed``: ``valid_minutes``. ``travel``: the ETA of a pass-by
    (0 when the shopper is already there) plus ``decision_window_minutes``, at most
    ``max_valid_minutes``."""

    rule: ValidityRule
    valid_minutes: int
    decision_window_minutes: int | None = None
    max_valid_minutes: int | None = None

    def minutes_for(self, eta_s: float | None) -> int:
        if self.rule is ValidityRule.FIXED:
            return self.valid_minutes
        window = self.decision_window_minutes or self.valid_minutes
        cap = self.max_valid_minutes or MAX_VALID_MINUTES
        travel = math.ceil(max(0.0, eta_s or 0.0) / 60)
        return max(1, min(cap, travel + window))

    def expiry(self, issued_at: datetime, eta_s: float | None) -> datetime:
        return coupon_expiry(issued_at, self.minutes_for(eta_s))


def check_validity(validity: Validity) -> None:
    """Refuse a rule that cannot give a sensible lifetime (the manager API's 422)."""
    for name in ("valid_minutes", "decision_window_minutes", "max_valid_minutes"):
        value = getattr(validity, name)
        if value is not None and not 1 <= value <= MAX_VALID_MINUTES:
            raise InvalidCampaign(f"{name} must be between 1 and {MAX_VALID_MINUTES}")
    if validity.rule is ValidityRule.TRAVEL:
        if validity.max_valid_minutes is None:
            raise InvalidCampaign("the travel validity rule needs max_valid_minutes (the cap)")
        window = validity.decision_window_minutes or validity.valid_minutes
        if window > validity.max_valid_minutes:
            raise InvalidCampaign("decision_window_minutes must not exceed max_valid_minutes")


@dataclass(frozen=True, slots=True)
class CampaignWindow:
    status: str
    starts_at: datetime | None
    ends_at: datetime | None

    def is_live(self, now: datetime) -> bool:
        if self.status != "active":
            return False
        if self.starts_at is not None and now < self.starts_at:
            return False
        return self.ends_at is None or now < self.ends_at


@dataclass(frozen=True, slots=True)
class CampaignRules:
    """What a campaign asks of each issue beyond its window (all optional)."""

    active_hours: dict[str, Any] | None = None  # opening-hours shape, in the store's zone
    store_cooldown_minutes: int = 0
    max_coupons: int | None = None
    max_liability: int | None = None

    @property
    def has_budget(self) -> bool:
        return self.max_coupons is not None or self.max_liability is not None


def window_refusal(window: CampaignWindow, now: datetime) -> Refusal | None:
    if window.status != "active":
        return Refusal.CAMPAIGN_INACTIVE
    if window.starts_at is not None and now < window.starts_at:
        return Refusal.CAMPAIGN_NOT_STARTED
    if window.ends_at is not None and now >= window.ends_at:
        return Refusal.CAMPAIGN_ENDED
    return None


def headline_refusal(refusals: list[Refusal]) -> Refusal:
    for reason in REFUSAL_PRECEDENCE:
        if reason in refusals:
            return reason
    return refusals[0]


def cap_key(subject_id: str, campaign_id: str, local_day: date) -> str:
    """Offers of one campaign to one shopper on one day of the shopper's calendar."""
    return f"cap:{{{subject_id}}}:{campaign_id}:{local_day.isoformat()}"


def cooldown_key(subject_id: str, store_id: str) -> str:
    return f"cooldown:{{{subject_id}}}:{store_id}"


def lockout_bucket(now: datetime, window_s: int) -> tuple[int, int]:
    """The fixed window ``now`` falls in and the seconds until it ends (the Retry-After)."""
    epoch = int(now.timestamp())
    bucket = epoch // window_s
    return bucket, max(1, (bucket + 1) * window_s - epoch)


def shopper_cap_key(subject_id: str, local_day: date) -> str:
    """Offers issued to one shopper on one day of their own calendar, across campaigns."""
    return f"shopper-cap:{{{subject_id}}}:{local_day.isoformat()}"


def remaining_seconds(expires_at: datetime, now: datetime) -> int:
    return max(0, int((expires_at - now).total_seconds()))
