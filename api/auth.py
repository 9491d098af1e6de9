"""Who is calling: role API keys (constant-time compare) and device-bound SDK tokens (JWT)."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache

import jwt

from core.apikeys import ApiKeyVerifier, split_key
from core.errors import Unauthenticated
from core.settings import Settings

log = logging.getLogger(__name__)

TOKEN_AUDIENCE = "offer-engine:sdk"
TOKEN_ALGORITHM = "HS256"


class Role(StrEnum):
    SDK = "sdk"
    MANAGER = "manager"
    COMPLIANCE = "compliance"
    POS = "pos"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who presented a role key: the key's visible id (``env:<role>`` for a bootstrap key from
    the settings), a label (a POS key names its terminal) and the stores it may act for."""

    role: Role
    key_id: str
    label: str
    stores: tuple[str, ...] | None = None

    def may_act_for(self, store_id: str) -> bool:
        return self.stores is None or store_id in self.stores


def check_role_key(
    settings: Settings, role: Role, presented: str | None, keys: ApiKeyVerifier | None = None
) -> Caller:
    """The caller behind ``presented`` when it is a valid key of ``role``. Managed keys (made by
    ``offer-engine keys``) are checked against their stored digest; the role's key from the
    settings stays valid as a bootstrap key. Comparisons run in constant time."""
    if not presented:
        raise Unauthenticated(
            f"this endpoint needs the {role.value} API key in the X-API-Key header"
        )
    if keys is not None and split_key(presented) is not None:
        record = keys.verify(presented)
        if record is not None and record.role == role.value:
            return Caller(role, record.id, record.label, record.stores)
        log.info("refused %s API key id=%s", role.value, key_label(presented))
        raise Unauthenticated(f"the API key is not valid for the {role.value} role")
    expected = getattr(settings, f"{role.value}_api_key").get_secret_value()
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        log.info("refused %s API key id=%s", role.value, key_label(presented))
        raise Unauthenticated(f"the API key is not valid for the {role.value} role")
    return Caller(role, f"env:{role.value}", f"{role.value} bootstrap key")


def key_label(presented: str) -> str:
    """A name for a presented key that is safe to log or count by: the visible id of a managed
    key, or a short digest of anything else (never the secret itself)."""
    parts = split_key(presented)
    if parts is not None:
        return parts[0]
    return "h:" + hashlib.sha256(presented.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class DeviceClaims:
    device_id: str
    subject_id: str
    token_version: int


def issue_device_token(
    settings: Settings, claims: DeviceClaims, now: datetime
) -> tuple[str, datetime]:
    expires = now + timedelta(days=settings.device_token_ttl_days)
    token = jwt.encode(
        {
            "sub": claims.device_id,
            "subj": claims.subject_id,
            "ver": claims.token_version,
            "aud": TOKEN_AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        },
        settings.secret_key.get_secret_value(),
        algorithm=TOKEN_ALGORITHM,
    )
    return token, expires


def read_device_token(settings: Settings, token: str | None, now: datetime) -> DeviceClaims:
    if not token:
        raise Unauthenticated("this endpoint needs a device token: 'Authorization: Bearer <token>'")
    claims, expires = _verified_token(settings.secret_key.get_secret_value(), token)
    if expires <= now.timestamp():
        raise Unauthenticated("device token expired; register the device again")
    return claims


@lru_cache(maxsize=16_384)
def _verified_token(secret: str, token: str) -> tuple[DeviceClaims, int]:
    """A token's claims and expiry once its signature is checked. A phone sends the same token
    with every request: its signature is checked once per process (a rejected token is not
    kept, and the expiry is compared with the engine's clock on every use)."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[TOKEN_ALGORITHM],
            audience=TOKEN_AUDIENCE,
            # time is checked by the caller against the engine's clock, not the wall clock
            options={"verify_exp": False, "verify_iat": False, "require": ["sub", "exp", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"device token rejected: {exc}") from exc
    claims = DeviceClaims(
        str(payload["sub"]), str(payload.get("subj", "")), int(payload.get("ver", 0))
    )
    return claims, int(payload["exp"])
