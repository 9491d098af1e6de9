"""Firebase Cloud Messaging, HTTP v1 API (``projects.messages.send``).

One request reaches Android, iOS (FCM forwards to APNs) and web: the message carries
``android.ttl`` = the seconds the coupon has left, ``apns-expiration`` = its absolute expiry and
``webpush`` ``TTL``, all with one collapse id per coupon (see ``notify.coupon_fields``).

Errors are classified from the documented error body
(``{"error": {"code", "status", "details": [{"@type": ".../google.firebase.fcm.v1.FcmError",
"errorCode"}]}}``; the ``errorCode`` wins over ``status``):

| FCM                                         | raised                               |
|---------------------------------------------|--------------------------------------|
| UNREGISTERED (404)                          | TokenUnregistered                    |
| INVALID_ARGUMENT on ``message.token`` (400) | TokenUnregistered (malformed token)  |
| INVALID_ARGUMENT, SENDER_ID_MISMATCH, ...   | PermanentSendError                   |
| QUOTA_EXCEEDED (429)                        | RateLimited (Retry-After)            |
| UNAVAILABLE (503), INTERNAL (500)           | ProviderUnavailable (Retry-After)    |
| 401 UNAUTHENTICATED                         | new access token and one retry, then |
|                                             | PermanentSendError                   |
| network failure                             | TransientSendError                   |

A bare 404 NOT_FOUND without ``UNREGISTERED`` is a wrong project or URL, not a dead token: it
is a ``PermanentSendError`` so a misconfiguration never deactivates every token.
"""

from __future__ import annotations

from typing import Any

import httpx

from core.clock import Clock, SystemClock
from notify.channel import OfferMessage, PermanentSendError, SendReceipt, TransientSendError
from notify.coupon_fields import collapse_token, expires_epoch, expires_iso, remaining_ttl_s
from notify.errors import ProviderUnavailable, RateLimited, TokenUnregistered, retry_after_from
from notify.google_oauth import ServiceAccount, ServiceAccountTokens

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def build_fcm_message(message: OfferMessage) -> dict[str, Any]:
    """The ``message`` object of a ``messages:send`` request body."""
    ttl = remaining_ttl_s(message)
    collapse = collapse_token(message)
    return {
        "token": message.address,
        "notification": {"title": message.title, "body": message.body},
        "data": {  # FCM data values must be strings
            "code": message.code,
            "expires_at": expires_iso(message),
            "discount_text": message.discount_text,
            "store_name": message.store_name,
            "idempotency_key": message.idempotency_key,
        },
        "android": {
            "ttl": f"{ttl}s",
            "collapse_key": collapse,
            "priority": "HIGH",
            "notification": {"tag": collapse},
        },
        "apns": {
            "headers": {
                "apns-expiration": str(expires_epoch(message)),
                "apns-collapse-id": collapse,
                "apns-priority": "10",
                "apns-push-type": "alert",
            }
        },
        "webpush": {"headers": {"TTL": str(ttl), "Urgency": "high", "Topic": collapse}},
    }


class FcmChannel:
    name = "push"  # the consent channel it serves
    provider = "fcm"

    def __init__(
        self,
        project_id: str,
        service_account_info: dict[str, Any],
        base_url: str = "https://fcm.googleapis.com",
        http: httpx.Client | None = None,
        *,
        clock: Clock | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=timeout_s)
        self._clock = clock or SystemClock()
        account = ServiceAccount.from_info(service_account_info)
        self._tokens = ServiceAccountTokens(account, FCM_SCOPE, self._http, self._clock)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def send(self, message: OfferMessage) -> SendReceipt:
        body = {"message": build_fcm_message(message)}
        token = self._tokens.token()
        response = self._post(body, token)
        if response.status_code == 401 and _error_code(response) != "THIRD_PARTY_AUTH_ERROR":
            self._tokens.invalidate(token)  # revoked or expired early: one retry with a new one
            response = self._post(body, self._tokens.token())
        if response.status_code == 200:
            return SendReceipt(provider_id=str(_json(response).get("name", "")))
        raise self._classify(response)

    def _post(self, body: dict[str, Any], token: str) -> httpx.Response:
        try:
            return self._http.post(
                self._url, json=body, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.TransportError as exc:
            raise TransientSendError(f"FCM unreachable: {exc!r}") from exc

    def _classify(self, response: httpx.Response) -> Exception:
        code = _error_code(response)
        http_status = response.status_code
        error = _json(response).get("error")
        text = error.get("message", "") if isinstance(error, dict) else response.text[:200]
        detail = f"FCM {http_status} {code}: {text}"
        retry_after = retry_after_from(response.headers, self._clock.now())
        if code == "UNREGISTERED":
            return TokenUnregistered(detail)
        if code == "INVALID_ARGUMENT" and _token_field_violation(response):
            return TokenUnregistered(detail)
        if code in ("QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED") or http_status == 429:
            return RateLimited(detail, retry_after)
        if code in ("UNAVAILABLE", "INTERNAL") or http_status >= 500:
            return ProviderUnavailable(detail, retry_after)
        if http_status == 401:
            return PermanentSendError(f"{detail} (after a fresh access token)")
        return PermanentSendError(detail)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _details(response: httpx.Response) -> list[dict[str, Any]]:
    error = _json(response).get("error")
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _error_code(response: httpx.Response) -> str:
    """``FcmError.errorCode`` when present, else the canonical ``status``, else ``""``."""
    for detail in _details(response):
        if detail.get("@type") == _FCM_ERROR_TYPE and detail.get("errorCode"):
            return str(detail["errorCode"])
    error = _json(response).get("error")
    return str(error.get("status", "")) if isinstance(error, dict) else ""


def _token_field_violation(response: httpx.Response) -> bool:
    for detail in _details(response):
        if detail.get("@type") == _BAD_REQUEST_TYPE:
            violations = detail.get("fieldViolations") or []
            if any(isinstance(v, dict) and v.get("field") == "message.token" for v in violations):
                return True
    return False
