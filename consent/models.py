"""Subjects (pseudonymous shoppers), their devices, notices, the consent ledger (append-only),
its current-state projection, signed checkpoints and decision receipts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime

BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Subject(Base):
    __tablename__ = "subjects"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_ref: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SubjectKey(Base):
    """The key that seals a subject's personal evidence. Deleting it crypto-shreds the evidence
    while the ledger's hashes (over the sealed bytes) stay verifiable."""

    __tablename__ = "subject_keys"

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wrapped_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("subjects.id"), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    push_token: Mapped[str | None] = mapped_column(String(4096))
    email: Mapped[str | None] = mapped_column(String(320))
    token_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Notice(Base):
    """A consent notice as shown to people. Immutable once published: a change is a new version."""

    __tablename__ = "notices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(40))
    version: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("uq_notices_purpose_version_language", "purpose", "version", "language", unique=True),
    )


class ConsentEvent(Base):
    """One ledger entry. Never updated or deleted; ``entry_hash`` chains it to the one before."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    subject_id: Mapped[str] = mapped_column(String(40), index=True)
    purpose: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(16), default="")
    state: Mapped[str] = mapped_column(String(24))
    notice_id: Mapped[str | None] = mapped_column(String(40))
    notice_version: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    evidence_sealed: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class LedgerHead(Base):
    """One row: the last entry's id and hash. Appends lock it, so the chain has one order."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    last_hash: Mapped[str] = mapped_column(String(64))


class ConsentCheckpoint(Base):
    """A signed statement of the chain head: "entry ``last_id`` has hash ``entry_hash``"."""

    __tablename__ = "consent_checkpoints"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    last_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), index=True)
    entry_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    public_key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class ConsentState(Base):
    """Current-state projection of the ledger: the latest event per subject, purpose, channel."""

    __tablename__ = "consent_states"

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True, default="")
    state: Mapped[str] = mapped_column(String(24))
    event_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    event_hash: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsentReceipt(Base):
    """A decision and the ledger entry it relied on: "was this lawful at time t?"."""

    __tablename__ = "consent_receipts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    subject_id: Mapped[str] = mapped_column(String(40), index=True)
    action: Mapped[str] = mapped_column(String(16))  # ping | offer | delivery
    subject_ref: Mapped[str | None] = mapped_column(String(64))  # coupon or delivery id
    purpose: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(16), default="")
    allowed: Mapped[bool] = mapped_column(Boolean)
    event_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    event_hash: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(300))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Preferences(Base):
    """What the shopper chose about offers; owned by them, honoured by offers/."""

    __tablename__ = "preferences"

    subject_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    categories: Mapped[list[str] | None] = mapped_column(JSON)  # None: every category
    quiet_start: Mapped[str | None] = mapped_column(String(5))  # "22:00", local time
    quiet_end: Mapped[str | None] = mapped_column(String(5))  # "07:30"
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    max_offers_per_day: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
