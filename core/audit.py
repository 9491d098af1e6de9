"""The audit log: who did what, when, to which record. Written in the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base, UTCDateTime


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(100))  # role and key/device, never a secret
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str | None] = mapped_column(String(100), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def audit(
    session: Session,
    *,
    actor: str,
    action: str,
    at: datetime,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(at=at, actor=actor, action=action, target=target, details=details or {})
    session.add(entry)
    return entry


def audit_page(
    session: Session,
    *,
    limit: int,
    offset: int,
    target: str | None = None,
    action: str | None = None,
    actor: str | None = None,
) -> tuple[list[AuditEntry], int]:
    """Newest first, optionally for one target, one action (or prefix ``campaign.``), one actor."""
    where = []
    if target:
        where.append(AuditEntry.target == target)
    if action:
        where.append(
            AuditEntry.action.startswith(action, autoescape=True)
            if action.endswith(".")
            else AuditEntry.action == action
        )
    if actor:
        where.append(AuditEntry.actor == actor)
    rows = list(
        session.scalars(
            select(AuditEntry)
            .where(*where)
            .order_by(AuditEntry.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )
    total = session.scalar(select(func.count()).select_from(AuditEntry).where(*where)) or 0
    return rows, total
