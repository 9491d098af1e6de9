"""OAuth 2.0 access tokens for a Google service account (the flow FCM HTTP v1 needs).

RFC 7523 JWT bearer grant, as Google documents it for server-to-server calls: a JWT signed RS256
with the service account's private key (``iss`` the account's email, ``scope``, ``aud`` the
token URI, ``iat``/``exp`` one hour apart) is posted to ``token_uri`` with
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``; the answer's ``access_token`` is
used as a bearer token until shortly before ``expires_in`` runs out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from core.clock import Clock
from notify.channel import PermanentSendError, TransientSendError
from notify.errors import ProviderUnavailable, RateLimited, retry_after_from

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = timedelta(hours=1)  # Google's maximum
REFRESH_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    client_email: str
    private_key: RSAPrivateKey
    token_uri: str
    private_key_id: str | None = None

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ServiceAccount:
        """From the parsed service-account JSON file Google issues."""
        missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
        if missing:
            raise ValueError(f"service account info lacks {', '.join(missing)}")
        key = load_pem_private_key(str(info["private_key"]).encode(), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("service account private_key is not an RSA key")
        key_id = info.get("private_key_id")
        return cls(
            client_email=str(info["client_email"]),
            private_key=key,
            token_uri=str(info["token_uri"]),
            private_key_id=str(key_id) if key_id else None,
        )

    @classmethod
    def from_file(cls, path: Path) -> ServiceAccount:
        return cls.from_info(json.loads(path.read_text(encoding="utf-8")))


class ServiceAccountTokens:
    """Access tokens for one account and scope, cached until ``REFRESH_MARGIN`` before expiry.
    Thread-safe: concurrent senders wait for one refresh instead of each making their own."""

    def __init__(
        self, account: ServiceAccount, scope: str, http: httpx.Client, clock: Clock
    ) -> None:
        self._account = account
        self._scope = scope
        self._http = http
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._valid_until: datetime | None = None

    def token(self) -> str:
        with self._lock:
            now = self._clock.now()
            if self._token is None or self._valid_until is None or now >= self._valid_until:
                self._token, self._valid_until = self._fetch(now)
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the API answered 401 to it); a newer one is kept."""
        with self._lock:
            if self._token == token:
                self._token = self._valid_until = None

    def assertion(self, now: datetime) -> str:
        issued = int(now.timestamp())
        claims = {
            "iss": self._account.client_email,
            "scope": self._scope,
            "aud": self._account.token_uri,
            "iat": issued,
            "exp": issued + int(ASSERTION_LIFETIME.total_seconds()),
        }
        headers = {"kid": self._account.private_key_id} if self._account.private_key_id else None
        return jwt.encode(claims, self._account.private_key, algorithm="RS256", headers=headers)

    def _fetch(self, now: datetime) -> tuple[str, datetime]:
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": self.assertion(now)}
        try:
            response = self._http.post(self._account.token_uri, data=form)
        except httpx.TransportError as exc:
            raise TransientSendError(f"OAuth token endpoint unreachable: {exc!r}") from exc
        if response.status_code != 200:
            detail = f"OAuth token endpoint {response.status_code}: {response.text[:200]}"
            retry_after = retry_after_from(response.headers, now)
            if response.status_code == 429:
                raise RateLimited(detail, retry_after)
            if response.status_code >= 500:
                raise ProviderUnavailable(detail, retry_after)
            # invalid_grant / invalid_client / unauthorized_client: the credentials are wrong
            raise PermanentSendError(f"service account rejected: {detail}")
        try:
            answer = response.json()
            token = str(answer["access_token"])
            lifetime = timedelta(seconds=int(answer.get("expires_in", 3600)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderUnavailable(f"OAuth token endpoint answered {exc!r}") from exc
        margin = min(REFRESH_MARGIN, lifetime / 2)
        return token, now + lifetime - margin
