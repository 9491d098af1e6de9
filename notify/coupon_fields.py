"""Fields every push channel derives from an ``OfferMessage`` the same way.

The worker's idempotency key is ``"<coupon id>:<channel>"`` (``":reminder"`` appended for the
reminder before expiry). From it:

- ``collapse_token``: the same for every channel of one coupon, so a repeated send replaces the
  earlier notification on the device instead of stacking. 32 characters of the URL-safe base64
  alphabet: valid as an FCM ``collapse_key``, an APNs ``apns-collapse-id`` (<= 64 bytes) and a
  Web Push ``Topic`` (<= 32 characters, RFC 8030 section 5.4).
- ``apns_id``: a UUID fixed by the key, so a retried send carries the same ``apns-id``.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC

from notify.channel import OfferMessage

# A fixed namespace for uuid5; changing it changes every apns-id.
_APNS_NAMESPACE = uuid.UUID("6b0f8c4e-2d1a-5b7e-9c3f-0a4d2e6f8b1c")


def coupon_ref(message: OfferMessage) -> str:
    """The coupon part of the idempotency key (the whole key when it has no channel suffix).
    A reminder shares it: it replaces the offer's notification on the device."""
    return message.idempotency_key.partition(":")[0]


def collapse_token(message: OfferMessage) -> str:
    digest = hashlib.sha256(f"offer-engine/coupon/{coupon_ref(message)}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:32]


def apns_id(message: OfferMessage) -> str:
    return str(uuid.uuid5(_APNS_NAMESPACE, message.idempotency_key))


def expires_iso(message: OfferMessage) -> str:
    """The coupon's expiry as RFC 3339 UTC, e.g. ``2026-11-23T09:05:00Z``."""
    return message.expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def expires_epoch(message: OfferMessage) -> int:
    """The coupon's expiry as UNIX seconds (APNs ``apns-expiration`` is absolute)."""
    return int(message.expires_at.timestamp())


def remaining_ttl_s(message: OfferMessage) -> int:
    """Seconds the provider may keep the message (never negative)."""
    return max(0, message.ttl_s)
