"""Who the manager is, and the console's session cookie.

The console logs in with the manager key once; the engine answers with a session cookie
(``HttpOnly``, ``SameSite=Strict``, ``Secure`` over https) holding a short-lived JWT signed with
the engine's secret. The key itself never reaches the page's JavaScript, so a script injected
into the page cannot read and take it away, and ``EventSource`` (the live feed) can authenticate
with the cookie. A cookie-authenticated request that changes something must also carry the
``X-Console: 1`` header, which a cross-site form cannot send (defence in depth next to SameSite).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import jwt

from core.apikeys import ApiKeyVerifier
from core.errors import Unauthenticated
from core.settings import Settings

COOKIE = "oe_console"
AUDIENCE = "offer-engine:console"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BOOTSTRAP_KEY = "env:manager"  # the caller id of the manager key from the settings


def key_fingerprint(key: str) -> str:
    """A short public name for a key (never the key): the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def manager_actor(settings: Settings, key_id: str = BOOTSTRAP_KEY) -> str:
    """Who the audit log names: a managed key's visible id, else the bootstrap key's
    fingerprint (never a key itself)."""
    if key_id != BOOTSTRAP_KEY:
        return f"manager:{key_id}"
    return f"manager:{key_fingerprint(settings.manager_api_key.get_secret_value())}"


def issue_session(
    settings: Settings, now: datetime, key_id: str = BOOTSTRAP_KEY
) -> tuple[str, datetime]:
    """A session for the manager who logged in with the key ``key_id`` (a managed key's id, or
    the bootstrap key from the settings)."""
    expires = now + timedelta(hours=settings.console_session_hours)
    token = jwt.encode(
        {
            "sub": manager_actor(settings, key_id),
            "kid": key_id,
            "aud": AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        },
        settings.secret_key.get_secret_value(),
        algorithm="HS256",
    )
    return token, expires


def read_session(
    settings: Settings,
    token: str,
    now: datetime,
    method: str,
    marker: str | None,
    keys: ApiKeyVerifier | None = None,
) -> str:
    """The actor of a valid session, or ``Unauthenticated``. A session lasts only as long as the
    key it was made with: rotating the bootstrap key ends its sessions, revoking (or the expiry
    of) a managed key ends that manager's."""
    try:
        payload = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"verify_exp": False, "verify_iat": False, "require": ["sub", "exp", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated("console session not valid; log in again") from exc
    if int(payload["exp"]) <= now.timestamp():
        raise Unauthenticated("console session expired; log in again")
    key_id = str(payload.get("kid", BOOTSTRAP_KEY))
    if key_id != BOOTSTRAP_KEY and (keys is None or not keys.active(key_id, "manager")):
        raise Unauthenticated("the manager key was revoked or has expired; log in again")
    if payload["sub"] != manager_actor(settings, key_id):
        raise Unauthenticated("the manager key changed; log in again")
    if method.upper() not in SAFE_METHODS and marker != "1":
        raise Unauthenticated("a console request that changes data needs the X-Console: 1 header")
    return str(payload["sub"])
