"""One interface for every delivery channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OfferMessage:
    """Everything a channel needs to deliver one coupon. ``ttl_s`` ends at the coupon's expiry."""

    idempotency_key: str
    address: str
    title: str
    body: str
    discount_text: str
    store_name: str
    code: str
    expires_at: datetime
    ttl_s: int
    # The shopper's one-click unsubscribe link (RFC 8058), for channels that can carry one.
    unsubscribe_url: str | None = None
    # The device's platform ("android", "ios", "web"): which push provider serves it.
    platform: str | None = None
    # A public page counting down to ``expires_at`` (shows the code, no personal data).
    countdown_url: str | None = None


@dataclass(frozen=True, slots=True)
class SendReceipt:
    provider_id: str


class TransientSendError(Exception):
    """Worth retrying while the coupon still lives (connection refused, 4xx/5xx temporary)."""


class PermanentSendError(Exception):
    """Retrying will not help (address rejected, invalid message)."""


class Channel(Protocol):
    name: str

    def send(self, message: OfferMessage) -> SendReceipt: ...
