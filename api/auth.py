"""Who is calling: role API keys (constant-time compare) and device-bound SDK tokens (JWT)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import jwt

from core.errors import Unauthenticated
from core.settings import Settings

TOKEN_AUDIENCE = "offer-engine:sdk"
TOKEN_ALGORITHM = "HS256"


class Role(StrEnum):
    SDK = "sdk"
    MANAGER = "manager"
    COMPLIANCE = "compliance"
    POS = "pos"


def check_role_key(settings: Settings, role: Role, presented: str | None) -> None:
    if not presented:
        raise Unauthenticated(
            f"this endpoint needs the {role.value} API key in the X-API-Key header"
        )
    expected = getattr(settings, f"{role.value}_api_key").get_secret_value()
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthenticated(f"the API key is not valid for the {role.value} role")


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
    try:
        payload = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[TOKEN_ALGORITHM],
            audience=TOKEN_AUDIENCE,
            # time is checked below against the engine's clock, not the wall clock
            options={"verify_exp": False, "verify_iat": False, "require": ["sub", "exp", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"device token rejected: {exc}") from exc
    if int(payload["exp"]) <= now.timestamp():
        raise Unauthenticated("device token expired; register the device again")
    return DeviceClaims(
        str(payload["sub"]), str(payload.get("subj", "")), int(payload.get("ver", 0))
    )
