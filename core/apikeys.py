"""API keys: issued per role, stored hashed, scoped to stores, rotatable and revocable.

A key reads ``oek_<key id>_<secret>``. The key id is visible (it names the key in lists, logs and
audit entries); the secret is 256 random bits, shown once when the key is made and stored only as
its SHA-256 digest, compared in constant time. A digest of a random 256-bit secret needs no salt
or slow hash: there is nothing to guess.

Checks are cheap: a key's row is cached in the process for ``cache_s`` seconds, and every
``recheck_s`` seconds the process reads a generation counter in the hot state that every rotation
and revocation bumps; a changed generation drops the cache. So a revocation is seen by every
process sharing the hot state within ``recheck_s`` seconds, and by any process within ``cache_s``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from core.clock import Clock
from core.db import Base, UTCDateTime, transaction
from core.errors import InvalidInput, NotFound
from core.state import HotState

ROLES = ("sdk", "manager", "compliance", "pos")
KEY_PREFIX = "oek_"
GENERATION_COUNTER = "apikeys:generation"
_GENERATION_TTL_S = 10 * 365 * 86400


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), index=True)
    label: Mapped[str] = mapped_column(String(100))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    # For a POS key: the stores its terminal may redeem for; None = every store.
    stores: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    replaced_by: Mapped[str | None] = mapped_column(String(24))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(presented: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a key in this module's format, None for anything else."""
    if not presented.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = presented[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id or not secret or len(key_id) > 24:
        return None
    return key_id, secret


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What a check needs of a key's row (never its digest outside this module)."""

    id: str
    role: str
    label: str
    stores: tuple[str, ...] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_by: str | None
    created_at: datetime
    _secret_sha256: str

    def valid_at(self, now: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at

    def state_at(self, now: datetime) -> str:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active" if self.expires_at is None else "expiring"

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "label": self.label,
            "stores": list(self.stores) if self.stores is not None else None,
            "state": self.state_at(now),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "replaced_by": self.replaced_by,
        }


def _record(row: ApiKey) -> KeyRecord:
    return KeyRecord(
        row.id,
        row.role,
        row.label,
        tuple(row.stores) if row.stores is not None else None,
        row.expires_at,
        row.revoked_at,
        row.replaced_by,
        row.created_at,
        row.secret_sha256,
    )


@dataclass(frozen=True, slots=True)
class IssuedKey:
    record: KeyRecord
    key: str  # the full key: shown once, never stored


class ApiKeyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, key_id: str) -> KeyRecord | None:
        row = self.session.get(ApiKey, key_id)
        return None if row is None else _record(row)

    def all(self) -> list[KeyRecord]:
        rows = self.session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
        return [_record(r) for r in rows]

    def add(self, row: ApiKey) -> None:
        self.session.add(row)
        self.session.flush()

    def row(self, key_id: str) -> ApiKey:
        row = self.session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}")
        return row


class ApiKeyAdmin:
    """Issue, rotate and revoke keys. Every change bumps the hot-state generation after commit."""

    def __init__(self, sessions: sessionmaker[Session], state: HotState, clock: Clock) -> None:
        self.sessions = sessions
        self.state = state
        self.clock = clock

    def _new_row(
        self, role: str, label: str, stores: list[str] | None, now: datetime
    ) -> tuple[ApiKey, str]:
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if stores is not None and role != "pos":
            raise InvalidInput("only POS keys are limited to stores")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = ApiKey(
            id=key_id,
            role=role,
            label=label[:100],
            secret_sha256=digest(secret),
            stores=sorted(set(stores)) if stores else None,
            created_at=now,
        )
        return row, f"{KEY_PREFIX}{key_id}_{secret}"

    def create(self, role: str, label: str, stores: list[str] | None = None) -> IssuedKey:
        now = self.clock.now()
        with transaction(self.sessions) as session:
            row, key = self._new_row(role, label, stores, now)
            ApiKeyRepository(session).add(row)
            record = _record(row)
        return IssuedKey(record, key)

    def rotate(self, key_id: str, overlap: timedelta = timedelta(0)) -> IssuedKey:
        """A new key with the same role, label and stores; the old one stays valid for
        ``overlap`` (0: revoked at once)."""
        if overlap < timedelta(0):
            raise InvalidInput("the overlap cannot be negative")
        now = self.clock.now()
        with transaction(self.sessions) as session:
            repository = ApiKeyRepository(session)
            old = repository.row(key_id)
            if not _record(old).valid_at(now):
                raise InvalidInput(f"API key {key_id} is no longer valid; create a new one")
            row, key = self._new_row(old.role, old.label, old.stores, now)
            repository.add(row)
            old.replaced_by = row.id
            if overlap > timedelta(0):
                ends = now + overlap
                old.expires_at = ends if old.expires_at is None else min(old.expires_at, ends)
            else:
                old.revoked_at = now
            record = _record(row)
        self._bump()
        return IssuedKey(record, key)

    def revoke(self, key_id: str) -> KeyRecord:
        now = self.clock.now()
        with transaction(self.sessions) as session:
            row = ApiKeyRepository(session).row(key_id)
            if row.revoked_at is None:
                row.revoked_at = now
            record = _record(row)
        self._bump()
        return record

    def list(self) -> list[KeyRecord]:
        with transaction(self.sessions) as session:
            return ApiKeyRepository(session).all()

    def _bump(self) -> None:
        self.state.incr(GENERATION_COUNTER, _GENERATION_TTL_S)


class ApiKeyVerifier:
    """Checks presented keys against the stored digests, with a short in-process cache."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        state: HotState,
        clock: Clock,
        *,
        cache_s: float = 30.0,
        recheck_s: float = 2.0,
    ) -> None:
        self.sessions = sessions
        self.state = state
        self.clock = clock
        self.cache_s = cache_s
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[KeyRecord | None, datetime]] = {}
        self._generation: int | None = None
        self._generation_read_at: datetime | None = None

    def verify(self, presented: str) -> KeyRecord | None:
        """The key's record when ``presented`` is a valid key right now, else None."""
        parts = split_key(presented)
        if parts is None:
            return None
        key_id, secret = parts
        now = self.clock.now()
        record = self._lookup(key_id, now)
        # The digest is compared even for an unknown id, so timing tells nothing either way.
        expected = record._secret_sha256 if record is not None else "0" * 64
        matches = hmac.compare_digest(digest(secret).encode(), expected.encode())
        if record is None or not matches or not record.valid_at(now):
            return None
        return record

    def active(self, key_id: str, role: str) -> bool:
        """Whether the key with this visible id is a valid key of ``role`` right now (a session
        made with it ends when the key is revoked or expires)."""
        now = self.clock.now()
        record = self._lookup(key_id, now)
        return record is not None and record.role == role and record.valid_at(now)

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    def _lookup(self, key_id: str, now: datetime) -> KeyRecord | None:
        self._check_generation(now)
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None and (now - cached[1]).total_seconds() < self.cache_s:
            return cached[0]
        with transaction(self.sessions) as session:
            record = ApiKeyRepository(session).get(key_id)
        with self._lock:
            if len(self._cache) > 10_000:  # unknown ids must not grow memory without bound
                self._cache.clear()
            self._cache[key_id] = (record, now)
        return record

    def _check_generation(self, now: datetime) -> None:
        read_at = self._generation_read_at
        if read_at is not None and (now - read_at).total_seconds() < self.recheck_s:
            return
        generation = self.state.counter(GENERATION_COUNTER)
        with self._lock:
            if generation != self._generation:
                self._cache.clear()
                self._generation = generation
            self._generation_read_at = now
