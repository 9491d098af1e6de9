"""Reading the ledger in pages for exports and verification: entries as the hashed values
(datetimes as the ISO 8601 text the hash covers), and the subjects' sealed evidence opened.

Pages are keyset pages (``id > last ORDER BY id LIMIT n``): each is bounded, nothing holds a
whole range, and no server-side cursor has to outlive a page; the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import binascii
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import String, select, type_coerce
from sqlalchemy.orm import Session

from consent.chain import FIELD_NAMES
from consent.crypto import EvidenceSealer
from consent.models import ConsentEvent, SubjectKey

EVENTS = ConsentEvent.__table__
EntryRow = Sequence[Any]  # hashed fields in FIELD_NAMES order, then prev_hash, entry_hash
KEY_CACHE = 16_384  # subjects whose unwrapped key is kept (about 2.5 KB each: <= 40 MB)
COLUMNS = [EVENTS.c[name] for name in (*FIELD_NAMES, "prev_hash", "entry_hash")]
ID = FIELD_NAMES.index("id")
SUBJECT = FIELD_NAMES.index("subject_id")
SEALED = FIELD_NAMES.index("evidence_sealed")
DATETIMES = tuple(FIELD_NAMES.index(name) for name in ("occurred_at", "recorded_at", "valid_until"))
PREV, HASH = len(FIELD_NAMES), len(FIELD_NAMES) + 1


def read_entries(
    session: Session, *, after: int, upper: int | None, limit: int
) -> Sequence[EntryRow]:
    """A page of entries in id order: the hashed fields in ``FIELD_NAMES`` order, datetimes as
    the ISO 8601 text the hash covers (``datetime.isoformat()`` of the UTC instant), then
    ``prev_hash`` and ``entry_hash`` (at ``PREV`` and ``HASH``)."""
    rows, iso = read_page(session, after, upper, limit)
    return [converted(row, iso) for row in rows]


def read_page(
    session: Session, after: int, upper: int | None, limit: int
) -> tuple[Sequence[EntryRow], Callable[[Any], Any]]:
    """Rows as stored, and the function that turns their datetimes into the hashed ISO text.

    On SQLite the datetime columns are read as their stored text and rewritten to ISO form
    directly: parsing them into ``datetime`` objects first is most of the cost of a page."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    query = select(*(SQLITE_COLUMNS if sqlite else COLUMNS)).where(EVENTS.c.id > after)
    if upper is not None:
        query = query.where(EVENTS.c.id <= upper)
    rows = session.execute(query.order_by(EVENTS.c.id).limit(limit)).all()
    return rows, (_sqlite_iso if sqlite else _iso)


def converted(row: EntryRow, iso: Callable[[Any], Any]) -> EntryRow:
    values = list(row[: HASH + 1])
    for position in DATETIMES:
        if values[position] is not None:
            values[position] = iso(values[position])
    return values


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _sqlite_iso(value: Any) -> Any:
    """SQLAlchemy's SQLite text ('2026-01-05 08:00:00.007000', naive UTC) as isoformat()."""
    if isinstance(value, str) and len(value) == 26 and value[10] == " " and value[19] == ".":
        micro = value[20:]
        fraction = "" if micro == "000000" else "." + micro
        return f"{value[:10]}T{value[11:19]}{fraction}+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return value  # not a datetime at all: hashed as found, so it will not verify
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC).isoformat()
    return parsed.astimezone(UTC).isoformat()


_UNKNOWN: Any = object()


class EvidenceReader:
    """Opens sealed evidence like ``EvidenceSealer.open``, unwrapping each subject's key once
    (a bounded cache), and hands back the sealed JSON text as it is (no re-encoding)."""

    def __init__(self, session: Session, sealer: EvidenceSealer) -> None:
        self.session = session
        self.sealer = sealer
        self._keys: OrderedDict[str, AESGCM | None] = OrderedDict()

    def load(self, subject_ids: set[str]) -> None:
        wanted = [s for s in subject_ids if s not in self._keys]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            found = {
                subject_id: wrapped
                for subject_id, wrapped in self.session.execute(
                    select(SubjectKey.subject_id, SubjectKey.wrapped_key).where(
                        SubjectKey.subject_id.in_(chunk)
                    )
                )
            }
            for subject_id in chunk:
                wrapped = found.get(subject_id)
                self._keys[subject_id] = self.sealer.unwrap(wrapped) if wrapped else None
        while len(self._keys) > max(KEY_CACHE, len(subject_ids)):
            self._keys.popitem(last=False)

    def open(self, subject_id: str, sealed: str) -> tuple[str, str]:
        """(status, JSON text): opened / shredded ("null") / unreadable ("null")."""
        key = self._keys.get(subject_id, _UNKNOWN)
        if key is _UNKNOWN:
            self.load({subject_id})
            key = self._keys[subject_id]
        if key is None:
            return "shredded", "null"
        try:
            raw = binascii.a2b_base64(sealed)
            plain = key.decrypt(raw[:12], raw[12:], None).decode("ascii")
        except Exception:  # forged or damaged ciphertext: report it, keep exporting
            return "unreadable", "null"
        if "\n" in plain or "\r" in plain:
            plain = json.dumps(json.loads(plain), sort_keys=True)
        return "opened", plain


SQLITE_COLUMNS = [
    type_coerce(column, String) if position in DATETIMES else column
    for position, column in enumerate(COLUMNS)
]
