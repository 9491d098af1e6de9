"""Provider errors shared by the push and webhook channels.

The delivery worker classifies by type: a ``PermanentSendError`` is not retried, a
``TransientSendError`` is retried while the coupon still has time. The subclasses here say a
little more:

- ``TokenUnregistered``: the address (push token, subscription, webhook URL) is gone for good;
  the worker should deactivate it so nothing is sent to it again.
- ``RetryLater`` (``RateLimited``, ``ProviderUnavailable``): the provider asked for a pause;
  ``retry_after_s`` is its ``Retry-After`` in seconds (``None`` when it gave none), to be used as
  the lower bound of the next backoff.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from notify.channel import PermanentSendError, TransientSendError


class TokenUnregistered(PermanentSendError):
    """The provider says this address no longer exists (uninstalled app, expired subscription)."""


class RetryLater(TransientSendError):
    """A temporary refusal that may carry the provider's ``Retry-After``."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(RetryLater):
    """Too many requests (HTTP 429): quota, per-device or per-topic rate."""


class ProviderUnavailable(RetryLater):
    """The provider failed or is overloaded (HTTP 500/503)."""


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` (RFC 9110 section 10.2.3) as seconds from ``now``: delay-seconds or an
    HTTP-date. ``None`` when absent or unreadable; a date in the past gives ``0``."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retry_after_from(headers: Mapping[str, str], now: datetime) -> float | None:
    """The ``Retry-After`` of a response's headers (any letter case), in seconds from ``now``."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            return parse_retry_after(value, now)
    return None
