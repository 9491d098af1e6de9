"""Pure offer rules: coupon codes, validity windows, campaign liveness, redemption outcomes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

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


class CouponAlreadyRedeemed(EngineError):
    code = "coupon_already_redeemed"


class CouponExpired(EngineError):
    code = "coupon_expired"


class InvalidCampaign(InvalidInput):
    code = "invalid_campaign"


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


def cap_key(subject_id: str, campaign_id: str, now: datetime) -> str:
    return f"cap:{subject_id}:{campaign_id}:{now.date().isoformat()}"


def shopper_cap_key(subject_id: str, local_day: date) -> str:
    """Offers issued to one shopper on one day of their own calendar, across campaigns."""
    return f"shopper-cap:{subject_id}:{local_day.isoformat()}"


def remaining_seconds(expires_at: datetime, now: datetime) -> int:
    return max(0, int((expires_at - now).total_seconds()))
