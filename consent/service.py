"""Subjects and their devices; notices (versioned, immutable once published)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consent.domain import Purpose
from consent.models import Device, Notice, Subject
from core.errors import EngineError, NotFound
from core.ids import new_id


class NoticeConflict(EngineError):
    code = "notice_conflict"


class NoticeRegistry:
    def __init__(self, session: Session) -> None:
        self.session = session

    def publish(
        self, *, purpose: Purpose, version: str, language: str, text: str, now: datetime
    ) -> Notice:
        """Publish a notice. The same version again with the same text is a no-op; with other
        text it is refused: what people were shown can never change after the fact."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        existing = self.session.scalar(
            select(Notice).where(
                Notice.purpose == purpose.value,
                Notice.version == version,
                Notice.language == language,
            )
        )
        if existing is not None:
            if existing.content_hash != digest:
                raise NoticeConflict(
                    f"notice {purpose.value} '{version}' ({language}) is already published with "
                    "other text; publish a new version"
                )
            return existing
        notice = Notice(
            id=new_id("ntc"),
            purpose=purpose.value,
            version=version,
            language=language,
            text=text,
            content_hash=digest,
            published_at=now,
        )
        self.session.add(notice)
        self.session.flush()
        return notice

    def latest(self, purpose: Purpose, language: str | None = None) -> Notice | None:
        query = select(Notice).where(Notice.purpose == purpose.value)
        if language:
            query = query.where(Notice.language == language)
        return self.session.scalar(query.order_by(Notice.published_at.desc()).limit(1))


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

    def devices(self, device_ids: Collection[str]) -> dict[str, Device]:
        """The registered ones of these devices, by id, in one query."""
        if not device_ids:
            return {}
        found = self.session.scalars(select(Device).where(Device.id.in_(list(device_ids))))
        return {device.id: device for device in found}

    def rotate_token(self, device_id: str, presented_version: int) -> int | None:
        """Move the device to its next token generation, only from the one presented: the old
        token stops working at once. ``None`` when that generation is no longer current (the
        token was rotated already, or the subject erased)."""
        result = self.session.execute(
            update(Device)
            .where(Device.id == device_id, Device.token_version == presented_version)
            .values(token_version=presented_version + 1)
            .execution_options(synchronize_session=False)
        )
        if not getattr(result, "rowcount", 0):
            return None
        return presented_version + 1
