"""Apple Push Notification service: the HTTP/2 provider API with token-based (JWT) auth.

``POST /3/device/<token>`` over HTTP/2 (APNs refuses HTTP/1.1), with a provider token: a JWT
signed ES256 with the team's ``.p8`` key (header ``kid``, claims ``iss`` = team id and ``iat``).
Apple wants the token refreshed no more often than every 20 minutes and no less often than every
60: it is reused for ``TOKEN_REFRESH_AFTER`` (50 minutes), and renewed early only when APNs
answers ``ExpiredProviderToken``.

Headers: ``apns-expiration`` is the coupon's absolute expiry (UNIX seconds; APNs drops the
notification after it), ``apns-collapse-id`` one per coupon, ``apns-id`` a UUID fixed by the
idempotency key (a retry reuses it), ``apns-push-type: alert``, ``apns-priority: 10``.

| APNs answer                                         | raised                        |
|-----------------------------------------------------|-------------------------------|
| 410 Unregistered / ExpiredToken                     | TokenUnregistered             |
| 400 BadDeviceToken, DeviceTokenNotForTopic          | TokenUnregistered             |
| other 400, 403, 404, 405, 413                       | PermanentSendError            |
| 403 ExpiredProviderToken                            | new provider token, one retry |
| 429 TooManyRequests, TooManyProviderTokenUpdates    | RateLimited (Retry-After)     |
| 500 InternalServerError, 503 ServiceUnavailable     | ProviderUnavailable           |
| network failure                                     | TransientSendError            |
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from core.clock import Clock, SystemClock
from notify.channel import OfferMessage, PermanentSendError, SendReceipt, TransientSendError
from notify.coupon_fields import apns_id, collapse_token, expires_epoch, expires_iso
from notify.errors import ProviderUnavailable, RateLimited, TokenUnregistered, retry_after_from

TOKEN_REFRESH_AFTER = timedelta(minutes=50)
MAX_PAYLOAD_BYTES = 4096
_DEAD_TOKEN_REASONS = {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}


def build_apns_payload(message: OfferMessage) -> dict[str, Any]:
    return {
        "aps": {"alert": {"title": message.title, "body": message.body}, "sound": "default"},
        "code": message.code,
        "expires_at": expires_iso(message),
        "discount_text": message.discount_text,
        "store_name": message.store_name,
    }


def build_apns_headers(message: OfferMessage, topic: str) -> dict[str, str]:
    return {
        "apns-topic": topic,
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": str(expires_epoch(message)),
        "apns-collapse-id": collapse_token(message),
        "apns-id": apns_id(message),
    }


class ApnsProviderToken:
    """The ES256 provider token, shared by every request and renewed every 50 minutes."""

    def __init__(self, team_id: str, key_id: str, private_key_pem: str, clock: Clock) -> None:
        key = load_pem_private_key(private_key_pem.encode(), password=None)
        if not isinstance(key, EllipticCurvePrivateKey):
            raise ValueError("the APNs key must be the EC (P-256) .p8 key from Apple")
        self._team_id, self._key_id, self._key = team_id, key_id, key
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._issued_at: datetime | None = None

    def current(self) -> str:
        with self._lock:
            now = self._clock.now()
            if (
                self._token is None
                or self._issued_at is None
                or now - self._issued_at >= TOKEN_REFRESH_AFTER
            ):
                self._token, self._issued_at = self._sign(now), now
            return self._token

    def renew(self, rejected: str) -> None:
        """APNs said ``rejected`` has expired: the next ``current()`` signs a new one."""
        with self._lock:
            if self._token == rejected:
                self._token = self._issued_at = None

    def _sign(self, now: datetime) -> str:
        claims = {"iss": self._team_id, "iat": int(now.timestamp())}
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._key_id})


class ApnsChannel:
    name = "push"  # the consent channel it serves
    provider = "apns"

    def __init__(
        self,
        team_id: str,
        key_id: str,
        private_key_pem: str,
        topic: str,
        base_url: str = "https://api.push.apple.com",
        http: httpx.Client | None = None,
        *,
        clock: Clock | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._topic = topic
        self._base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.Client(http2=True, timeout=timeout_s)
        self._clock = clock or SystemClock()
        self._tokens = ApnsProviderToken(team_id, key_id, private_key_pem, self._clock)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def send(self, message: OfferMessage) -> SendReceipt:
        payload = json.dumps(build_apns_payload(message), separators=(",", ":")).encode()
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PermanentSendError(f"APNs payload is {len(payload)} bytes (max 4096)")
        url = f"{self._base_url}/3/device/{quote(message.address, safe='')}"
        headers = build_apns_headers(message, self._topic)
        token = self._tokens.current()
        response = self._post(url, headers, token, payload)
        if response.status_code == 403 and _reason(response) == "ExpiredProviderToken":
            self._tokens.renew(token)
            response = self._post(url, headers, self._tokens.current(), payload)
        if response.status_code == 200:
            return SendReceipt(provider_id=response.headers.get("apns-id", headers["apns-id"]))
        raise self._classify(response)

    def _post(
        self, url: str, headers: dict[str, str], token: str, payload: bytes
    ) -> httpx.Response:
        try:
            return self._http.post(
                url,
                content=payload,
                headers={
                    **headers,
                    "authorization": f"bearer {token}",
                    "content-type": "application/json",
                },
            )
        except httpx.TransportError as exc:
            raise TransientSendError(f"APNs unreachable: {exc!r}") from exc

    def _classify(self, response: httpx.Response) -> Exception:
        status, reason = response.status_code, _reason(response)
        detail = f"APNs {status} {reason or response.reason_phrase}"
        retry_after = retry_after_from(response.headers, self._clock.now())
        if status == 410 or reason in _DEAD_TOKEN_REASONS:
            return TokenUnregistered(detail)
        if status == 429:
            return RateLimited(detail, retry_after)
        if status >= 500:
            return ProviderUnavailable(detail, retry_after)
        if status == 403 and reason == "ExpiredProviderToken":
            return PermanentSendError(f"{detail} (after a fresh provider token; check the clock)")
        return PermanentSendError(detail)


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""
