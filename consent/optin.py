"""Email double opt-in and RFC 8058 one-click unsubscribe.

Offers by email need two steps: the app's grant is recorded as ``pending_confirmation`` and a
confirmation email carries a signed link; following it appends ``confirmed``. Only then does the
gate let offer email through (``confirmed`` is a granting state, ``pending_confirmation`` is not).
Every offer email carries a signed unsubscribe link bound to the subject and the email channel;
one POST to it appends ``withdrawn``. Links are JWTs (HS256, the engine's secret) with their own
audiences, so neither can stand in for the other nor for a device token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

import jwt
from cryptography.exceptions import InvalidTag
from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.crypto import EvidenceSealer
from consent.domain import Channel, CollectionMethod, ConsentStatus, Purpose
from consent.gate import ConsentGate
from consent.ledger import ConsentLedger, LedgerConfig
from consent.models import ConsentEvent, ConsentState, Subject, SubjectKey
from core.db import on_commit
from core.errors import EngineError
from core.state import HotState

log = logging.getLogger(__name__)

CONFIRM_AUDIENCE = "offer-engine:confirm"
UNSUBSCRIBE_AUDIENCE = "offer-engine:unsubscribe"
ALGORITHM = "HS256"
CONFIRM_PATH = "/v1/consent/confirm"
UNSUBSCRIBE_PATH = "/v1/consent/unsubscribe"
ENDED_STATES = frozenset(
    {ConsentStatus.WITHDRAWN, ConsentStatus.REFUSED, ConsentStatus.INVALIDATED}
)


class LinkRefused(EngineError):
    """The link is malformed, forged, or for another purpose."""

    code = "invalid_link"


class LinkExpired(LinkRefused):
    code = "link_expired"


class LinkSuperseded(LinkRefused):
    """The request the link answers is no longer the current one."""

    code = "link_superseded"


class SubjectErased(LinkRefused):
    code = "subject_erased"


class ConfirmationSender(Protocol):
    """Sends the confirmation email (implemented by ``notify.email``'s channels)."""

    def send_confirmation(self, *, to: str, link: str, expires_at: datetime, ref: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ConfirmClaims:
    subject_id: str
    event_id: int


class ConsentLinks:
    """Signs and reads the confirmation and unsubscribe links."""

    def __init__(
        self, secret: str, base_url: str, confirm_ttl: timedelta = timedelta(hours=48)
    ) -> None:
        self._secret = secret
        self._base = base_url.rstrip("/")
        self.confirm_ttl = confirm_ttl

    def confirm_url(self, subject_id: str, event_id: int, now: datetime) -> tuple[str, datetime]:
        expires = now + self.confirm_ttl
        token = self._sign(
            {
                "sub": subject_id,
                "evt": event_id,
                "aud": CONFIRM_AUDIENCE,
                "iat": int(now.timestamp()),
                "exp": int(expires.timestamp()),
            }
        )
        return f"{self._base}{CONFIRM_PATH}?{urlencode({'token': token})}", expires

    def read_confirm(self, token: str, now: datetime) -> ConfirmClaims:
        payload = self._read(token, CONFIRM_AUDIENCE, ("sub", "evt", "exp"))
        if int(payload["exp"]) <= now.timestamp():
            raise LinkExpired(
                "this confirmation link has expired; turn on offers by email in the app again "
                "to get a new one"
            )
        try:
            return ConfirmClaims(str(payload["sub"]), int(payload["evt"]))
        except (TypeError, ValueError) as exc:
            raise LinkRefused("this confirmation link is not valid") from exc

    def unsubscribe_url(self, subject_id: str, channel: Channel, now: datetime) -> str:
        """No expiry: an unsubscribe link must keep working in an old email, and all it can do is
        stop email to the subject it is bound to."""
        token = self._sign(
            {
                "sub": subject_id,
                "chn": channel.value,
                "aud": UNSUBSCRIBE_AUDIENCE,
                "iat": int(now.timestamp()),
            }
        )
        return f"{self._base}{UNSUBSCRIBE_PATH}?{urlencode({'token': token})}"

    def read_unsubscribe(self, token: str) -> tuple[str, Channel]:
        payload = self._read(token, UNSUBSCRIBE_AUDIENCE, ("sub", "chn"))
        try:
            return str(payload["sub"]), Channel(payload["chn"])
        except ValueError as exc:
            raise LinkRefused("this unsubscribe link is not valid") from exc

    def _sign(self, payload: dict[str, Any]) -> str:
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def _read(self, token: str, audience: str, required: tuple[str, ...]) -> dict[str, Any]:
        if not token:
            raise LinkRefused("the link has no token; open the link from the email as it is")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=audience,
                # time is checked against the engine's clock, not the wall clock
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["aud", *required],
                },
            )
        except jwt.InvalidTokenError as exc:
            raise LinkRefused(
                "this link is not valid (damaged or not ours); open the link from the email as "
                "it is"
            ) from exc
        return payload


@dataclass(frozen=True, slots=True)
class LinkOutcome:
    """What following a link did. ``event`` is None when nothing had to be recorded."""

    subject_id: str
    event: ConsentEvent | None
    state: str


class EmailOptIn:
    """Offers by email: the pending request with its confirmation email, and the confirmation."""

    def __init__(
        self,
        session: Session,
        config: LedgerConfig,
        state: HotState,
        links: ConsentLinks,
        sender: ConfirmationSender | None = None,
    ) -> None:
        self.session = session
        self.ledger = ConsentLedger(session, config)
        self.gate = ConsentGate(session, state)
        self.links = links
        self.sender = sender

    def request(
        self,
        *,
        subject_id: str,
        address: str,
        notice_version: str,
        evidence: dict[str, Any],
        now: datetime,
    ) -> ConsentEvent:
        """Record ``pending_confirmation`` and, once that is committed, email the link."""
        event = self.ledger.record(
            subject_id=subject_id,
            purpose=Purpose.MARKETING_OFFERS,
            channel=Channel.EMAIL,
            status=ConsentStatus.PENDING_CONFIRMATION,
            notice_version=notice_version,
            method=CollectionMethod.SDK,
            evidence={**evidence, "address": address},
            occurred_at=now,
            now=now,
        )
        self.gate.invalidate_after_commit(subject_id)
        link, expires = self.links.confirm_url(subject_id, event.id, now)
        sender, ref = self.sender, f"{subject_id}-{event.id}"
        if sender is not None:
            on_commit(
                self.session,
                lambda: sender.send_confirmation(
                    to=address, link=link, expires_at=expires, ref=ref
                ),
            )
        else:
            log.warning("no confirmation sender configured; %s cannot confirm by email", ref)
        return event

    def confirm(self, token: str, evidence: dict[str, Any], now: datetime) -> LinkOutcome:
        """Append ``confirmed`` for the pending request the link names. Following the link again
        changes nothing; a link whose request was withdrawn or replaced is refused."""
        claims = self.links.read_confirm(token, now)
        _live_subject(self.session, claims.subject_id)
        current = _current_email_offers(self.session, claims.subject_id)
        if current is None:
            raise LinkRefused("this confirmation link does not match any request")
        pending_now = current.state == ConsentStatus.PENDING_CONFIRMATION
        if not (pending_now and current.event_id == claims.event_id):
            if current.event_id > claims.event_id and current.state == ConsentStatus.CONFIRMED:
                return LinkOutcome(claims.subject_id, None, current.state)  # followed again
            if pending_now and current.event_id > claims.event_id:
                raise LinkSuperseded(
                    "a newer confirmation email was sent; use the link in that one"
                )
            raise LinkSuperseded(
                f"offers by email are '{current.state}' since this link was sent; turn them on "
                "in the app again to get a new link"
            )
        pending = self.session.get(ConsentEvent, claims.event_id)
        assert pending is not None
        event = self.ledger.record(
            subject_id=claims.subject_id,
            purpose=Purpose.MARKETING_OFFERS,
            channel=Channel.EMAIL,
            status=ConsentStatus.CONFIRMED,
            notice_version=pending.notice_version,
            method=CollectionMethod.EMAIL_LINK,
            evidence={**evidence, "confirms_event_id": pending.id, "actor": "data_subject"},
            occurred_at=now,
            now=now,
        )
        self.gate.invalidate_after_commit(claims.subject_id)
        return LinkOutcome(claims.subject_id, event, event.state)


class OneClickUnsubscribe:
    """RFC 8058: one POST with the link's token withdraws offers by email. Idempotent."""

    def __init__(
        self, session: Session, config: LedgerConfig, state: HotState, links: ConsentLinks
    ) -> None:
        self.session = session
        self.ledger = ConsentLedger(session, config)
        self.gate = ConsentGate(session, state)
        self.links = links

    def check(self, token: str) -> str:
        """The subject the link is for (for the confirmation page); raises when it is invalid."""
        subject_id, _ = self.links.read_unsubscribe(token)
        return subject_id

    def unsubscribe(self, token: str, evidence: dict[str, Any], now: datetime) -> LinkOutcome:
        subject_id, channel = self.links.read_unsubscribe(token)
        subject = self.session.get(Subject, subject_id)
        if subject is None or subject.erased_at is not None:
            return LinkOutcome(subject_id, None, ConsentStatus.INVALIDATED.value)
        current = _current_email_offers(self.session, subject_id, channel)
        if current is None or current.state in ENDED_STATES:
            return LinkOutcome(subject_id, None, current.state if current else "none")
        last = self.session.get(ConsentEvent, current.event_id)
        assert last is not None
        event = self.ledger.record(
            subject_id=subject_id,
            purpose=Purpose.MARKETING_OFFERS,
            channel=channel,
            status=ConsentStatus.WITHDRAWN,
            notice_version=last.notice_version,
            method=CollectionMethod.EMAIL_LINK,
            evidence={**evidence, "via": "List-Unsubscribe one-click", "actor": "data_subject"},
            occurred_at=now,
            now=now,
        )
        self.gate.invalidate_after_commit(subject_id)
        return LinkOutcome(subject_id, event, event.state)


def confirmed_address(
    session: Session, sealer: EvidenceSealer, subject_id: str, event_id: int | None
) -> str | None:
    """The address that the ledger entry ``event_id`` (a subject's current grant of offers by
    email) confirmed: the one its confirmation link was sent to. None when the entry is not
    such a confirmation or its evidence can no longer be read (an erased subject): no address
    then has the shopper's opt-in."""
    key = session.get(SubjectKey, subject_id)
    confirmed = session.get(ConsentEvent, event_id) if event_id is not None else None
    if key is None or confirmed is None or confirmed.subject_id != subject_id:
        return None
    if confirmed.state != ConsentStatus.CONFIRMED.value:
        return None
    try:
        evidence = sealer.open(key.wrapped_key, confirmed.evidence_sealed) or {}
        request = session.get(ConsentEvent, evidence.get("confirms_event_id"))
        if request is None or request.subject_id != subject_id:
            return None
        address = (sealer.open(key.wrapped_key, request.evidence_sealed) or {}).get("address")
    except (InvalidTag, ValueError):  # damaged or forged ciphertext: no readable address
        return None
    return address if isinstance(address, str) else None


def _live_subject(session: Session, subject_id: str) -> Subject:
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise LinkRefused("this link does not match any shopper")
    if subject.erased_at is not None:
        raise SubjectErased("this shopper's data was erased; nothing can be confirmed")
    return subject


def _current_email_offers(
    session: Session, subject_id: str, channel: Channel = Channel.EMAIL
) -> ConsentState | None:
    """The projection row, locked for the rest of the transaction where the database can."""
    return session.scalar(
        select(ConsentState)
        .where(
            ConsentState.subject_id == subject_id,
            ConsentState.purpose == Purpose.MARKETING_OFFERS.value,
            ConsentState.channel == channel.value,
        )
        .with_for_update()
    )
