"""The consent ledger (append-only) with its current-state projection, and subject registry."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.domain import (
    NO_CHANNEL,
    Channel,
    CollectionMethod,
    ConsentDecision,
    ConsentStatus,
    Purpose,
    content_hash,
    decide,
)
from consent.models import ConsentEvent, ConsentState, Device, Subject
from core.errors import NotFound
from core.ids import new_id


class ConsentLedger:
    """Appends consent events and keeps the projection in the same transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def record(
        self,
        *,
        subject_id: str,
        purpose: Purpose,
        channel: Channel | None,
        status: ConsentStatus,
        notice_version: str,
        method: CollectionMethod,
        evidence: dict[str, Any],
        occurred_at: datetime,
        recorded_at: datetime,
    ) -> ConsentEvent:
        channel_value = channel.value if channel else NO_CHANNEL
        fields = {
            "subject_id": subject_id,
            "purpose": purpose.value,
            "channel": channel_value,
            "state": status.value,
            "notice_version": notice_version,
            "method": method.value,
            "evidence": evidence,
            "occurred_at": occurred_at,
            "recorded_at": recorded_at,
        }
        event = ConsentEvent(
            subject_id=subject_id,
            purpose=purpose.value,
            channel=channel_value,
            state=status.value,
            notice_version=notice_version,
            method=method.value,
            evidence=evidence,
            occurred_at=occurred_at,
            recorded_at=recorded_at,
            content_hash=content_hash(fields),
        )
        self.session.add(event)
        self.session.flush()
        current = self.session.get(ConsentState, (subject_id, purpose.value, channel_value))
        if current is None:
            self.session.add(
                ConsentState(
                    subject_id=subject_id,
                    purpose=purpose.value,
                    channel=channel_value,
                    state=status.value,
                    event_id=event.id,
                    event_hash=event.content_hash,
                    occurred_at=occurred_at,
                )
            )
        elif current.occurred_at <= occurred_at:
            current.state = status.value
            current.event_id = event.id
            current.event_hash = event.content_hash
            current.occurred_at = occurred_at
        self.session.flush()
        return event

    def check(
        self, subject_id: str, purpose: Purpose, channel: Channel | None = None
    ) -> ConsentDecision:
        channel_value = channel.value if channel else NO_CHANNEL
        row = self.session.get(ConsentState, (subject_id, purpose.value, channel_value))
        if row is None:
            return decide(purpose.value, channel_value, None, None, None)
        return decide(purpose.value, channel_value, row.state, row.event_id, row.event_hash)

    def check_any_channel(self, subject_id: str, purpose: Purpose) -> ConsentDecision:
        """Allowed when the purpose is given on at least one channel (e.g. offers by email)."""
        rows = self.session.scalars(
            select(ConsentState)
            .where(ConsentState.subject_id == subject_id, ConsentState.purpose == purpose.value)
            .order_by(ConsentState.occurred_at.desc())
        ).all()
        for row in rows:
            decision = decide(purpose.value, row.channel, row.state, row.event_id, row.event_hash)
            if decision.allowed:
                return decision
        if rows:
            latest = rows[0]
            return decide(
                purpose.value, latest.channel, latest.state, latest.event_id, latest.event_hash
            )
        return decide(purpose.value, NO_CHANNEL, None, None, None)

    def current(self, subject_id: str) -> list[ConsentState]:
        return list(
            self.session.scalars(
                select(ConsentState)
                .where(ConsentState.subject_id == subject_id)
                .order_by(ConsentState.purpose, ConsentState.channel)
            )
        )


class SubjectRegistry:
    """Pseudonymous shoppers and the devices they register."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def register_device(
        self,
        *,
        customer_ref: str,
        platform: str,
        push_token: str | None,
        email: str | None,
        now: datetime,
    ) -> tuple[Subject, Device]:
        subject = self.session.scalar(select(Subject).where(Subject.external_ref == customer_ref))
        if subject is None:
            subject = Subject(id=new_id("sub"), external_ref=customer_ref, created_at=now)
            self.session.add(subject)
            self.session.flush()
        device = Device(
            id=new_id("dev"),
            subject_id=subject.id,
            platform=platform,
            push_token=push_token,
            email=email,
            token_version=1,
            created_at=now,
        )
        self.session.add(device)
        self.session.flush()
        return subject, device

    def device(self, device_id: str) -> Device:
        device = self.session.get(Device, device_id)
        if device is None:
            raise NotFound(f"device {device_id} is not registered")
        return device

    def devices_of(self, subject_ids: Iterable[str]) -> list[Device]:
        return list(
            self.session.scalars(select(Device).where(Device.subject_id.in_(list(subject_ids))))
        )
