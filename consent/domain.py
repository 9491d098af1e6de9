"""Pure consent rules: purposes, channels, states, decisions and the ledger's hash chain."""

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
    PENDING_CONFIRMATION = "pending_confirmation"
    CONFIRMED = "confirmed"
    EXPIRED = "expired"
    INVALIDATED = "invalidated"


class CollectionMethod(StrEnum):
    SDK = "sdk"
    WEB_FORM = "web_form"
    EMAIL_LINK = "email_link"
    API = "api"


GRANTING_STATES = frozenset({ConsentStatus.GIVEN, ConsentStatus.CONFIRMED})
NO_CHANNEL = ""
GENESIS_HASH = "0" * 64


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


@dataclass(frozen=True, slots=True)
class ConsentView:
    """The current state of one (purpose, channel) of a subject, from the projection."""

    state: str
    event_id: int
    event_hash: str
    valid_until: datetime | None


def decide(purpose: str, channel: str, view: ConsentView | None, now: datetime) -> ConsentDecision:
    """Default deny: only a current granting state that has not expired allows."""
    label = purpose if not channel else f"{purpose} on channel '{channel}'"
    if view is None:
        return ConsentDecision(
            False, purpose, channel, None, None, f"no recorded consent for {label}"
        )
    if view.state not in GRANTING_STATES:
        return ConsentDecision(
            False,
            purpose,
            channel,
            view.event_id,
            view.event_hash,
            f"consent for {label} is '{view.state}'",
        )
    if view.valid_until is not None and now >= view.valid_until:
        return ConsentDecision(
            False,
            purpose,
            channel,
            view.event_id,
            view.event_hash,
            f"consent for {label} expired at {view.valid_until.isoformat()}; "
            "ask the shopper to renew it",
        )
    return ConsentDecision(
        True, purpose, channel, view.event_id, view.event_hash, f"consent for {label} {view.state}"
    )


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_encode).encode()


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The ledger entry's hash: SHA-256 over the previous entry's hash and this entry's fields,
    so an edit, deletion, insertion or reordering anywhere breaks every later hash."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(fields)).hexdigest()


def _encode(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")
