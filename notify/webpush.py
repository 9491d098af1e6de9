"""Web Push (RFC 8030) with VAPID (RFC 8292) and an aes128gcm-encrypted payload (RFC 8291),
sent by ``pywebpush``.

The address is the browser's ``PushSubscription`` as JSON: ``{"endpoint": ...,
"keys": {"p256dh": ..., "auth": ...}}``. Headers: ``TTL`` = the seconds the coupon has left,
``Urgency: high``, ``Topic`` = one token per coupon (a repeat replaces a queued earlier one).

| push service answer        | raised                                 |
|----------------------------|----------------------------------------|
| 201 / 202                  | sent (receipt: the ``Location`` URL)   |
| 404, 410                   | TokenUnregistered (subscription gone)  |
| 400, 401, 403, 413, other 4xx | PermanentSendError                  |
| 429                        | RateLimited (Retry-After)              |
| 5xx                        | ProviderUnavailable (Retry-After)      |
| network failure            | TransientSendError                     |
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import requests
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid02
from pywebpush import WebPushException, webpush

from core.clock import Clock, SystemClock
from notify.channel import OfferMessage, PermanentSendError, SendReceipt, TransientSendError
from notify.coupon_fields import collapse_token, expires_iso, remaining_ttl_s
from notify.errors import ProviderUnavailable, RateLimited, TokenUnregistered, parse_retry_after

VAPID_TOKEN_LIFETIME = timedelta(hours=12)  # RFC 8292: at most 24 hours


def load_vapid_key(private_key: str) -> Vapid02:
    """A VAPID key from PEM, or from base64url DER / raw 32-byte form (what ``vapid --gen``
    and most dashboards print)."""
    text = private_key.strip()
    try:
        if text.startswith("-----BEGIN"):
            return Vapid02.from_pem(text.encode())
        return Vapid02.from_string(text)
    except Exception as exc:  # py_vapid raises whatever the decoder raised
        raise ValueError(f"unreadable VAPID private key: {exc!r}") from exc


def build_webpush_payload(message: OfferMessage) -> dict[str, Any]:
    return {
        "title": message.title,
        "body": message.body,
        "code": message.code,
        "expires_at": expires_iso(message),
        "discount_text": message.discount_text,
        "store_name": message.store_name,
        "idempotency_key": message.idempotency_key,
    }


def parse_subscription(address: str) -> dict[str, Any]:
    try:
        subscription = json.loads(address)
        endpoint = subscription["endpoint"]
        keys = subscription["keys"]
        p256dh, auth = keys["p256dh"], keys["auth"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentSendError(f"not a Web Push subscription: {exc!r}") from exc
    if not all(isinstance(v, str) and v for v in (endpoint, p256dh, auth)):
        raise PermanentSendError("Web Push subscription needs endpoint, keys.p256dh, keys.auth")
    return {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}


class WebPushChannel:
    name = "push"  # the consent channel it serves
    provider = "webpush"

    def __init__(
        self,
        vapid_private_key: str,
        vapid_subject: str,
        *,
        session: requests.Session | None = None,
        clock: Clock | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not vapid_subject.startswith(("mailto:", "https://")):
            raise ValueError("the VAPID subject must be a mailto: or https: URL (RFC 8292)")
        self._vapid = load_vapid_key(vapid_private_key)
        self._subject = vapid_subject
        self._owns_session = session is None
        self._session = session or requests.Session()
        self._clock = clock or SystemClock()
        self._timeout_s = timeout_s

    @property
    def application_server_key(self) -> str:
        """The public key browsers pass to ``pushManager.subscribe`` (base64url, unpadded)."""
        raw = self._vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def send(self, message: OfferMessage) -> SendReceipt:
        subscription = parse_subscription(message.address)
        now = self._clock.now()
        claims: dict[str, str | int] = {  # ``aud`` is filled from the endpoint by webpush()
            "sub": self._subject,
            "exp": int((now + VAPID_TOKEN_LIFETIME).timestamp()),
        }
        try:
            response = webpush(
                subscription_info=subscription,
                data=json.dumps(build_webpush_payload(message), separators=(",", ":")),
                vapid_private_key=self._vapid,
                vapid_claims=claims,
                content_encoding="aes128gcm",
                timeout=self._timeout_s,
                ttl=remaining_ttl_s(message),
                headers={"Urgency": "high", "Topic": collapse_token(message)},
                requests_session=self._session,
            )
        except WebPushException as exc:
            raise self._classify(exc) from exc
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as exc:
            raise PermanentSendError(f"bad Web Push endpoint: {exc!r}") from exc
        except requests.RequestException as exc:
            raise TransientSendError(f"push service unreachable: {exc!r}") from exc
        except ValueError as exc:  # undecodable or off-curve p256dh / auth keys
            raise PermanentSendError(f"bad Web Push subscription keys: {exc!r}") from exc
        location = response.headers.get("Location") if hasattr(response, "headers") else None
        return SendReceipt(provider_id=str(location or subscription["endpoint"]))

    def _classify(self, exc: WebPushException) -> Exception:
        response = exc.response
        if not isinstance(response, requests.Response):  # raised before any request was made
            return PermanentSendError(f"Web Push: {exc.message}")
        status = response.status_code
        detail = f"push service {status}: {response.text[:200]}"
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock.now())
        if status in (404, 410):
            return TokenUnregistered(detail)
        if status == 429:
            return RateLimited(detail, retry_after)
        if status >= 500:
            return ProviderUnavailable(detail, retry_after)
        return PermanentSendError(detail)
