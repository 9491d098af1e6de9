"""A signed webhook to the brand's own systems.

``POST <url>`` with a JSON body (``application/json``, UTF-8):

    {"type": "offer.coupon", "idempotency_key": "...", "recipient": "<delivery address>",
     "title": ..., "body": ..., "discount_text": ..., "store_name": ...,
     "code": "...", "expires_at": "2026-11-23T09:05:00Z", "ttl_s": 290}

Headers:

- ``X-Offer-Engine-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
  HMAC-SHA256(secret, ``"<t>." + raw body bytes``). Verify it on the raw body before parsing, and
  refuse a ``t`` more than 5 minutes away from your clock (a replayed request);
  ``verify_webhook_signature`` does both. During a secret rotation more than one ``v1=`` may be
  sent; any match is enough.
- ``Idempotency-Key``: the same for every retry of one coupon; process each key once.

Answers: any 2xx is delivered; 410 means the endpoint is gone (``TokenUnregistered``); 429 and
5xx are retried after ``Retry-After`` if given; 408 is retried; other 3xx/4xx are permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import httpx

from core.clock import Clock, SystemClock
from notify.channel import OfferMessage, PermanentSendError, SendReceipt, TransientSendError
from notify.coupon_fields import expires_iso, remaining_ttl_s
from notify.errors import ProviderUnavailable, RateLimited, TokenUnregistered, retry_after_from

SIGNATURE_HEADER = "X-Offer-Engine-Signature"
DEFAULT_TOLERANCE_S = 300


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Offer-Engine-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_webhook_signature(
    secret: str,
    header: str | None,
    body: bytes,
    now: datetime,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """For the receiving side: True when ``header`` signs exactly ``body`` with ``secret`` and
    its timestamp is within ``tolerance_s`` of ``now``. Constant-time comparison."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs(now.timestamp() - timestamp) > tolerance_s:
        return False
    expected = sign_webhook(secret, timestamp, body).partition(",v1=")[2]
    # bytes: compare_digest refuses str with non-ASCII characters (a forged header may have them)
    return any(
        hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
        for candidate in candidates
    )


def build_webhook_body(message: OfferMessage) -> dict[str, Any]:
    return {
        "type": "offer.coupon",
        "idempotency_key": message.idempotency_key,
        "recipient": message.address,
        "title": message.title,
        "body": message.body,
        "discount_text": message.discount_text,
        "store_name": message.store_name,
        "code": message.code,
        "expires_at": expires_iso(message),
        "ttl_s": remaining_ttl_s(message),
    }


class WebhookChannel:
    name = "webhook"
    provider = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        http: httpx.Client | None = None,
        *,
        clock: Clock | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not secret:
            raise ValueError("a webhook needs a signing secret")
        self._url = url
        self._secret = secret
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=timeout_s)
        self._clock = clock or SystemClock()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def send(self, message: OfferMessage) -> SendReceipt:
        body = json.dumps(build_webhook_body(message), separators=(",", ":")).encode()
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_webhook(self._secret, timestamp, body),
            "Idempotency-Key": message.idempotency_key,
            "User-Agent": "offer-engine-webhook/1",
        }
        try:
            response = self._http.post(self._url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise TransientSendError(f"webhook unreachable: {exc!r}") from exc
        status = response.status_code
        if 200 <= status < 300:
            receipt = response.headers.get("X-Request-Id") or message.idempotency_key
            return SendReceipt(provider_id=f"webhook {status}: {receipt}")
        detail = f"webhook {status}: {response.text[:200]}"
        retry_after = retry_after_from(response.headers, self._clock.now())
        if status == 410:
            raise TokenUnregistered(detail)
        if status == 429:
            raise RateLimited(detail, retry_after)
        if status >= 500 or status == 408:
            raise ProviderUnavailable(detail, retry_after)
        raise PermanentSendError(detail)
