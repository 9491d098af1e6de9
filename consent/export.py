"""Exports of the consent ledger for compliance: a range as NDJSON or CSV, streamed in constant
memory, carrying what is needed to verify it offline; and a subject's consent record.

Ledger range export (format ``offer-engine.consent-ledger`` version 1):

- ``begin`` resolves the range in one statement (one snapshot on every backend): the contiguous
  id span from the first entry recorded at or after ``start`` (and at or after ``first_id``) to the
  last one recorded before ``end`` (and at or before ``last_id``), the ledger head, and the hash
  of the entry before the span (the anchor; genesis before entry 1). It writes the audit entry
  in its own committed transaction, so an export that is started is on record.
- Entries are read by keyset pages (``id > last ORDER BY id LIMIT batch``): every page is bounded,
  nothing holds the whole range, and no server-side cursor has to outlive a page. Stored
  checkpoints in the span are read page by page too and written right after the entry they sign.
- At the end, in a short transaction of its own, the exporter signs the last exported entry and
  the head read at ``begin`` (the statement ``ConsentLedger.checkpoint_head`` makes) and writes
  both into the trailer, with the id and ``prev_hash`` of the entry after the span (null when the
  span reaches the end of the ledger).

NDJSON lines: a header, then per entry
``{"type":"entry","prev_hash":…,"entry_hash":…,"fields":{…},"evidence_status":…,"evidence":…}``
where ``fields`` is, byte for byte, the canonical JSON the hash covers (so
``sha256(prev_hash + "\\n" + fields) == entry_hash`` can be checked by hand), then
``{"type":"checkpoint",…}`` lines, and the trailer. ``evidence`` is the sealed evidence opened
with the subject's key (``evidence_status`` ``opened``), or null once the key is shredded
(``shredded``) or when it cannot be opened (``unreadable``); the hash covers ``evidence_sealed``.

CSV: the same entries, one row each with the columns in ``CSV_COLUMNS``; the header, checkpoints
and trailer are the same JSON objects on comment lines starting with ``# `` (read it with
``pandas.read_csv(path, comment="#")``). Datetimes are ISO 8601 exactly as hashed; an empty
``notice_id``, ``valid_until`` or ``evidence`` cell is null.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consent.chain import (
    FIELD_NAMES,
    FIELDS_TEMPLATE,
    FORMAT,
    FORMAT_VERSION,
    HASH_RULE,
    canonical_values,
)
from consent.crypto import export_span_message
from consent.domain import GENESIS_HASH, canonical
from consent.ledger import ConsentLedger, LedgerConfig
from consent.ledger_pages import (
    HASH,
    ID,
    PREV,
    SEALED,
    SUBJECT,
    EntryRow,
    EvidenceReader,
    converted,
    read_page,
)
from consent.models import ConsentCheckpoint, ConsentEvent, LedgerHead
from core.audit import audit
from core.clock import Clock
from core.db import transaction
from core.errors import InvalidInput

EVENTS = ConsentEvent.__table__
BATCH = 2_000
CSV_COLUMNS = (
    "id",
    "recorded_at",
    "occurred_at",
    "subject_id",
    "purpose",
    "channel",
    "state",
    "notice_id",
    "notice_version",
    "method",
    "valid_until",
    "evidence_sealed",
    "evidence_status",
    "evidence",
    "prev_hash",
    "entry_hash",
)


@dataclass(frozen=True, slots=True)
class LedgerRange:
    """Which entries: by ``recorded_at`` (start inclusive, end exclusive) and/or by id."""

    start: datetime | None = None
    end: datetime | None = None
    first_id: int | None = None
    last_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidInput(f"'{name}' needs a time zone (e.g. 2026-11-23T09:00:00Z)")
            try:  # compared in UTC: the ends of years 1 and 9999 cannot be
                if value is not None:
                    value.astimezone(UTC)
            except OverflowError:
                raise InvalidInput(f"'{name}' is out of range in UTC") from None
        if self.start and self.end and self.end <= self.start:
            raise InvalidInput("the range is empty: 'to' must be after 'from'")

    def describe(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
            "from_id": self.first_id,
            "to_id": self.last_id,
        }


@dataclass(frozen=True, slots=True)
class ExportPlan:
    range: LedgerRange
    format: str
    first_id: int | None  # None: nothing in the range
    last_id: int | None
    anchor_id: int
    anchor_hash: str
    head_id: int
    head_hash: str
    exported_at: datetime
    public_key: str

    def header(self) -> dict[str, Any]:
        return {
            "type": "header",
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "exported_at": self.exported_at.isoformat(),
            "range": self.range.describe(),
            "first_id": self.first_id,
            "last_id": self.last_id,
            "anchor": {"id": self.anchor_id, "hash": self.anchor_hash},
            "head": {"id": self.head_id, "hash": self.head_hash},
            "public_key": self.public_key,
            "hash": HASH_RULE,
            "fields": list(FIELD_NAMES),
        }


class LedgerExporter:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        config: LedgerConfig,
        clock: Clock,
        *,
        batch_size: int = BATCH,
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.clock = clock
        self.batch_size = batch_size

    def begin(self, wanted: LedgerRange, *, fmt: str, actor: str) -> ExportPlan:
        if fmt not in ("ndjson", "csv"):
            raise InvalidInput("format must be 'ndjson' or 'csv'")
        now = self.clock.now()
        with self.sessions() as session:
            first_q = select(EVENTS.c.id)
            last_q = select(EVENTS.c.id)
            if wanted.start is not None:
                first_q = first_q.where(EVENTS.c.recorded_at >= wanted.start)
            if wanted.first_id is not None:
                first_q = first_q.where(EVENTS.c.id >= wanted.first_id)
            if wanted.end is not None:
                last_q = last_q.where(EVENTS.c.recorded_at < wanted.end)
            if wanted.last_id is not None:
                last_q = last_q.where(EVENTS.c.id <= wanted.last_id)
            head = LedgerHead.__table__
            row = session.execute(
                select(
                    select(head.c.last_id).where(head.c.id == 1).scalar_subquery(),
                    select(head.c.last_hash).where(head.c.id == 1).scalar_subquery(),
                    first_q.order_by(EVENTS.c.id).limit(1).scalar_subquery(),
                    last_q.order_by(EVENTS.c.id.desc()).limit(1).scalar_subquery(),
                )
            ).one()
            head_id, head_hash, first_id, last_id = row
            if first_id is None or last_id is None or last_id < first_id:
                first_id = last_id = None
            anchor_id, anchor_hash = 0, GENESIS_HASH
            if first_id is not None:
                before = session.execute(
                    select(EVENTS.c.id, EVENTS.c.entry_hash)
                    .where(EVENTS.c.id < first_id)
                    .order_by(EVENTS.c.id.desc())
                    .limit(1)
                ).first()
                if before is not None:
                    anchor_id, anchor_hash = before
        plan = ExportPlan(
            range=wanted,
            format=fmt,
            first_id=first_id,
            last_id=last_id,
            anchor_id=anchor_id,
            anchor_hash=anchor_hash,
            head_id=head_id or 0,
            head_hash=head_hash or GENESIS_HASH,
            exported_at=now,
            public_key=self.config.signer.public_key,
        )
        with transaction(self.sessions) as session:
            audit(
                session,
                actor=actor,
                action="consent.ledger_export",
                at=now,
                target=f"consent_events:{first_id or '-'}..{last_id or '-'}",
                details={
                    "format": fmt,
                    **wanted.describe(),
                    "first_id": first_id,
                    "last_id": last_id,
                    "head_id": head_id or 0,
                },
            )
        return plan

    # the two formats
    def ndjson(self, plan: ExportPlan) -> Iterator[str]:
        """Chunks of NDJSON text (one page of entries per chunk)."""
        yield _json_line(plan.header())
        trailer: dict[str, Any] = {}
        for page in self._pages(plan, trailer):
            yield "".join(page.lines(_ndjson_entry, _json_line))
        yield _json_line(trailer)

    def csv(self, plan: ExportPlan) -> Iterator[str]:
        """Chunks of CSV text; header, checkpoints and trailer on ``# `` comment lines."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        buffer.write(_comment({**plan.header(), "columns": list(CSV_COLUMNS)}))
        writer.writerow(CSV_COLUMNS)
        yield buffer.getvalue()
        trailer: dict[str, Any] = {}

        def row_text(page: _Page, row: EntryRow) -> str:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(_csv_row(page, row))
            return buffer.getvalue()

        for page in self._pages(plan, trailer):
            yield "".join(page.lines(row_text, _comment))
        yield _comment(trailer)

    # reading
    def _pages(self, plan: ExportPlan, trailer: dict[str, Any]) -> Iterator[_Page]:
        count = stored = 0
        last: EntryRow | None = None
        following: EntryRow | None = None
        with self.sessions() as session:
            _snapshot(session)
            reader = EvidenceReader(session, self.config.sealer)
            if plan.first_id is not None and plan.last_id is not None:
                after = plan.first_id - 1
                while True:
                    rows, iso = read_page(session, after, plan.last_id, self.batch_size)
                    final = len(rows) < self.batch_size or rows[-1][ID] >= plan.last_id
                    upper = rows[-1][ID] if rows else plan.last_id
                    if final:
                        following = session.execute(
                            select(EVENTS.c.id, EVENTS.c.prev_hash)
                            .where(EVENTS.c.id > upper)
                            .order_by(EVENTS.c.id)
                            .limit(1)
                        ).first()
                        if following is None:  # the span ends the ledger: signed ids past
                            upper = max(upper, plan.head_id)  # its last entry were deleted
                    checkpoints = _checkpoints(session, after, upper)
                    reader.load({row[SUBJECT] for row in rows})
                    count += len(rows)
                    stored += len(checkpoints)
                    if rows:
                        last = rows[-1]
                        after = rows[-1][ID]
                    yield _Page(rows, checkpoints, reader, iso)
                    if final:
                        break
            if last is None:  # nothing in the range: the entry after the anchor, if any
                following = session.execute(
                    select(EVENTS.c.id, EVENTS.c.prev_hash)
                    .where(EVENTS.c.id > plan.anchor_id)
                    .order_by(EVENTS.c.id)
                    .limit(1)
                ).first()
        trailer.update(self._trailer(plan, last, count, stored, following))

    def _trailer(
        self,
        plan: ExportPlan,
        last: EntryRow | None,
        count: int,
        stored: int,
        following: EntryRow | None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        with transaction(self.sessions) as session:
            ledger = ConsentLedger(session, self.config)
            head = None
            # the last exported entry; for an empty range, the anchor it would follow
            end_id, end_hash = (
                (last[ID], last[HASH]) if last is not None else (plan.anchor_id, plan.anchor_hash)
            )
            end = _checkpoint_dict(ledger.checkpoint(end_id, end_hash, now))
            if end_id == plan.head_id:
                head = end  # the span ends at the head: one statement signs both
            elif plan.head_id:
                head = _checkpoint_dict(ledger.checkpoint(plan.head_id, plan.head_hash, now))
        signed_at, signer = now.isoformat(), self.config.signer
        span = {
            "anchor_id": plan.anchor_id,
            "anchor_hash": plan.anchor_hash,
            "last_id": end_id,
            "last_hash": end_hash,
            "signed_at": signed_at,
            "public_key": signer.public_key,
            "signature": signer.sign(
                export_span_message(plan.anchor_id, plan.anchor_hash, end_id, end_hash, signed_at)
            ),
        }
        return {
            "type": "trailer",
            "span": span,
            "entries": count,
            "stored_checkpoints": stored,
            "last": {"id": last[ID], "hash": last[HASH]} if last is not None else None,
            "next": (
                {"id": following[0], "prev_hash": following[1]} if following is not None else None
            ),
            "checkpoint": end,
            "head_checkpoint": head,
        }


class _Page:
    """One page of entries and the stored checkpoints that fall in it."""

    def __init__(
        self,
        rows: Sequence[EntryRow],
        checkpoints: list[dict[str, Any]],
        reader: EvidenceReader,
        iso: Callable[[Any], Any],
    ) -> None:
        self.rows = rows
        self.checkpoints = checkpoints
        self.reader = reader
        self.iso = iso

    def lines(
        self,
        entry: Callable[[_Page, EntryRow], str],
        checkpoint: Callable[[dict[str, Any]], str],
    ) -> list[str]:
        """Entries in id order, each stored checkpoint right after the entry it signs (one that
        signs a missing entry comes where that entry would have been)."""
        out: list[str] = []
        pending, position = self.checkpoints, 0
        for row in self.rows:
            while position < len(pending) and pending[position]["last_id"] < row[ID]:
                out.append(checkpoint(pending[position]))
                position += 1
            out.append(entry(self, row))
        out.extend(checkpoint(cp) for cp in pending[position:])
        return out


def _snapshot(session: Session) -> None:
    """PostgreSQL: one snapshot for every page (SQLite reads are consistent for a span that
    only ever grows at its end)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _checkpoints(session: Session, after: int | None, upper: int) -> list[dict[str, Any]]:
    query = select(ConsentCheckpoint).where(ConsentCheckpoint.last_id <= upper)
    if after is not None:
        query = query.where(ConsentCheckpoint.last_id > after)
    rows = session.scalars(query.order_by(ConsentCheckpoint.last_id, ConsentCheckpoint.id))
    return [_checkpoint_dict(cp) for cp in rows]


def _checkpoint_dict(cp: ConsentCheckpoint) -> dict[str, Any]:
    return {
        "type": "checkpoint",
        "last_id": cp.last_id,
        "entry_hash": cp.entry_hash,
        "signed_at": cp.signed_at.isoformat(),
        "public_key": cp.public_key,
        "signature": cp.signature,
    }


_LINE = (
    '{"type":"entry","prev_hash":%s,"entry_hash":%s,"fields":'
    + FIELDS_TEMPLATE
    + ',"evidence_status":"%s","evidence":%s}\n'
)


_WORDS: dict[str, str] = {}


def _word(value: str) -> str:
    """JSON text of a value from a small vocabulary (channel, method, notice, purpose, state),
    remembered; the memory is bounded by emptying it when it grows."""
    known = _WORDS.get(value)
    if known is None:
        if len(_WORDS) > 1_000:
            _WORDS.clear()
        known = _WORDS[value] = encode_basestring_ascii(value)
    return known


def _ndjson_entry(page: _Page, row: EntryRow) -> str:
    status, evidence = page.reader.open(row[SUBJECT], row[SEALED])
    text, word, iso = encode_basestring_ascii, _word, page.iso
    try:  # the columns' own types; anything else (a tampered row) takes the general path
        notice_id, occurred, recorded, valid_until = row[4], row[6], row[8], row[11]
        occurred_text = text(iso(occurred))
        return _LINE % (
            text(row[PREV]),
            text(row[HASH]),
            word(row[0]),
            text(row[1]),
            int.__repr__(row[2]),
            word(row[3]),
            "null" if notice_id is None else word(notice_id),
            word(row[5]),
            occurred_text,
            word(row[7]),
            occurred_text if recorded == occurred else text(iso(recorded)),
            word(row[9]),
            text(row[10]),
            "null" if valid_until is None else text(iso(valid_until)),
            status,
            evidence,
        )
    except TypeError:
        fields = converted(row, iso)[: len(FIELD_NAMES)]
        fields_text = canonical_values(fields)
        if fields_text is None:
            fields_text = canonical(dict(zip(FIELD_NAMES, fields, strict=True))).decode()
        return (
            f'{{"type":"entry","prev_hash":{json.dumps(row[PREV])},'
            f'"entry_hash":{json.dumps(row[HASH])},"fields":{fields_text},'
            f'"evidence_status":"{status}","evidence":{evidence}}}\n'
        )


def _csv_row(page: _Page, row: EntryRow) -> list[Any]:
    status, evidence = page.reader.open(row[SUBJECT], row[SEALED])
    fields = dict(zip(FIELD_NAMES, converted(row, page.iso), strict=False))
    out: list[Any] = []
    for column in CSV_COLUMNS:
        if column == "evidence_status":
            out.append(status)
        elif column == "evidence":
            out.append("" if evidence == "null" else evidence)
        elif column == "prev_hash":
            out.append(row[PREV])
        elif column == "entry_hash":
            out.append(row[HASH])
        else:
            value = fields[column]
            out.append("" if value is None else value)
    return out


def _json_line(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":")) + "\n"


def _comment(data: dict[str, Any]) -> str:
    return "# " + json.dumps(data, separators=(",", ":")) + "\n"
