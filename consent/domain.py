"""Pure consent rules: purposes, channels, states and the decision they lead to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.errors import EngineError


class Purpose(StrEnum):
    LOCATION_TRACKING = "location_tracking"
    MARKETING_OFFERS = "marketing_offers"


class Channel(StrEnum):
    PUSH = "push"
    EMAIL = "email"
    IN_APP = "in_app"
    WEBHOOK = "webhook"


class ConsentStatus(StrEnum):
    GIVEN = "given"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"


class CollectionMethod(StrEnum):
    SDK = "sdk"
    WEB_FORM = "web_form"
    EMAIL_LINK = "email_link"
    API = "api"


GRANTING_STATES = frozenset({ConsentStatus.GIVEN})
NO_CHANNEL = ""


class ConsentRequired(EngineError):
    """The action needs a consent the subject has not currently given."""

    code = "consent_required"


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """The answer to "may we?", with the ledger event it relied on (a decision receipt)."""

    allowed: bool
    purpose: str
    channel: str
    event_id: int | None
    event_hash: str | None
    reason: str

    def require(self) -> ConsentDecision:
        if not self.allowed:
            raise ConsentRequired(self.reason)
        return self


def decide(
    purpose: str, channel: str, state: str | None, event_id: int | None, event_hash: str | None
) -> ConsentDecision:
    """Default deny: only a current ``given`` state allows."""
    label = purpose if not channel else f"{purpose} on channel '{channel}'"
    if state is None:
        return ConsentDecision(
            False, purpose, channel, None, None, f"no recorded consent for {label}"
        )
    if state not in GRANTING_STATES:
        return ConsentDecision(
            False, purpose, channel, event_id, event_hash, f"consent for {label} is '{state}'"
        )
    return ConsentDecision(
        True, purpose, channel, event_id, event_hash, f"consent for {label} given"
    )


def content_hash(fields: dict[str, Any]) -> str:
    """SHA-256 over a canonical JSON encoding of an event's fields."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_encode)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _encode(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")
