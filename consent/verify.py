"""Verify the consent ledger offline: an exported NDJSON or CSV file, or the database directly.

Both stream in id order with constant memory and stop at the first bad record; the checks
themselves are in ``consent.chain.ChainChecker``. A file is judged on its own: the header's
anchor ties its first entry to the ledger before it, stored checkpoints are checked where they
fall, and the trailer's checkpoints, signed at export time, pin its last entry and the ledger
head, so a line removed, added, moved or changed anywhere is found. The database is read by
keyset pages; its tail is checked against the ``ledger_head`` row and every stored checkpoint.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consent.chain import (
    FIELD_NAMES,
    FORMAT,
    FORMAT_VERSION,
    ChainChecker,
    Checkpoint,
    Failed,
    Problem,
    VerifyResult,
    canonical_values,
    failed,
    span,
)
from consent.crypto import export_span_message, verify_signature
from consent.ledger_pages import HASH, PREV, read_entries
from consent.models import ConsentCheckpoint, ConsentEvent, LedgerHead

EVENTS = ConsentEvent.__table__
_ID = FIELD_NAMES.index("id")
BATCH = 5_000
LOOKAHEAD = 1_000_000  # lines read past a gap to tell a deletion from a move

_PREFIX = '{"type":"entry","prev_hash":"'
_MIDDLE = '","entry_hash":"'
_FIELDS = '","fields":'
_P = len(_PREFIX)
_E = _P + 64 + len(_MIDDLE)
_F = _E + 64 + len(_FIELDS)
_DECODER = json.JSONDecoder()
_TAIL = re.compile(r',"evidence_status":"[a-z_]+","evidence":')


# files
def verify_file(path: Path | str, *, trusted_key: str | None = None) -> VerifyResult:
    """An export written by ``offer-engine consent export`` (NDJSON, or CSV by its ``#`` lines)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return verify_stream(handle, trusted_key=trusted_key, source=str(path))


def verify_stream(
    handle: TextIO, *, trusted_key: str | None = None, source: str = "stream"
) -> VerifyResult:
    first = handle.readline()
    lines = _chain([first], handle)
    if first.startswith("#"):
        return verify_csv(lines, trusted_key=trusted_key, source=source)
    return verify_ndjson(lines, trusted_key=trusted_key, source=source)


def verify_ndjson(
    lines: Iterable[str], *, trusted_key: str | None = None, source: str = "ndjson"
) -> VerifyResult:
    reader = _Lines(lines)
    checker: ChainChecker | None = None
    try:
        header = _meta(reader.next_meaningful(), "header")
        checker = _checker_for(header, trusted_key)
        trailer = None
        for line in reader:
            if line.startswith(_PREFIX):
                _ndjson_entry(checker, line, reader)
                continue
            item = _json(line)
            kind = item.get("type")
            if trailer is not None:
                raise Failed(Problem("inserted", None, "there are lines after the trailer"))
            if kind == "entry":
                _entry_object(checker, item, reader)
            elif kind == "checkpoint":
                checker.checkpoint(Checkpoint.from_dict(item))
            elif kind == "trailer":
                trailer = item
            else:
                raise Failed(Problem("malformed", None, f"unknown line type {kind!r}"))
        _finish(checker, header, trailer)
    except Failed as exc:
        result = failed(source, checker, exc.problem)
        result.line = reader.number
        return result
    result = checker.result(source)
    return result


def verify_csv(
    lines: Iterable[str], *, trusted_key: str | None = None, source: str = "csv"
) -> VerifyResult:
    reader = _Lines(lines)
    comments: list[str] = []

    def rows_only() -> Iterator[str]:
        for line in reader:
            if line.startswith("#"):
                comments.append(line[1:])
            else:
                yield line

    checker: ChainChecker | None = None
    trailer: dict[str, Any] | None = None
    try:
        table = csv.reader(rows_only())
        header = _meta(comments.pop(0) if comments else next(iter(reader), ""), "header")
        checker = _checker_for(header, trusted_key)
        columns = next(table, None)
        if columns is None or "id" not in columns:
            raise Failed(Problem("malformed", None, "the CSV column header row is missing"))
        for cells in table:
            trailer = _comments(checker, comments, trailer)
            if trailer is not None:
                raise Failed(Problem("inserted", None, "there are rows after the trailer"))
            _csv_entry(checker, dict(zip(columns, cells, strict=False)))
        trailer = _comments(checker, comments, trailer)
        _finish(checker, header, trailer)
    except Failed as exc:
        result = failed(source, checker, exc.problem)
        result.line = reader.number
        return result
    return checker.result(source)


def _comments(
    checker: ChainChecker, comments: list[str], trailer: dict[str, Any] | None
) -> dict[str, Any] | None:
    while comments:
        item = _json(comments.pop(0))
        if trailer is not None:
            raise Failed(Problem("inserted", None, "there are lines after the trailer"))
        if item.get("type") == "checkpoint":
            checker.checkpoint(Checkpoint.from_dict(item))
        elif item.get("type") == "trailer":
            trailer = item
        else:
            raise Failed(Problem("malformed", None, f"unknown comment line {item.get('type')!r}"))
    return trailer


class _Lines:
    """Numbered, non-blank lines; shared by the parser and the look-ahead."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.number += 1
            if len(line) > 2 or line.strip():
                yield line

    def next_meaningful(self) -> str:
        return next(iter(self), "")


def _chain(first: list[str], rest: Iterable[str]) -> Iterator[str]:
    yield from first
    yield from rest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys repeat is refused: readers disagree on which value counts (most
    keep the last), so the value that was verified might not be the one read."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice in one object")
        seen.add(key)
    return dict(pairs)


def _json(text: str) -> dict[str, Any]:
    try:
        item = json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError as exc:
        raise Failed(Problem("malformed", None, f"not JSON: {exc}")) from None
    if not isinstance(item, dict):
        raise Failed(Problem("malformed", None, "a line is not a JSON object"))
    return item


def _meta(text: str, kind: str) -> dict[str, Any]:
    if not text.strip():
        raise Failed(Problem("malformed", None, "the file is empty"))
    item = _json(text.lstrip("#").strip())
    if item.get("type") != kind:
        raise Failed(Problem("malformed", None, f"the first line is not the export {kind}"))
    if item.get("format") != FORMAT or item.get("version") != FORMAT_VERSION:
        raise Failed(
            Problem(
                "malformed",
                None,
                f"not a {FORMAT} v{FORMAT_VERSION} export "
                f"({item.get('format')!r} v{item.get('version')!r})",
            )
        )
    return item


def _checker_for(header: dict[str, Any], trusted_key: str | None) -> ChainChecker:
    try:
        anchor, head = header["anchor"], header["head"]
        return ChainChecker(
            anchor_id=int(anchor["id"]),
            anchor_hash=str(anchor["hash"]),
            trusted_key=trusted_key,
            expected_key=str(header["public_key"]),
            head_id=_limit(int(head["id"]), header.get("last_id")),
            id_bound=max(int(head["id"]), int(header.get("last_id") or 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise Failed(Problem("malformed", None, f"unreadable header: {exc}")) from None


def _limit(head_id: int, planned_last: Any) -> int:
    """No entry may lie past the signed head, nor past the span the export planned."""
    return head_id if planned_last is None else min(head_id, int(planned_last))


def _ndjson_entry(checker: ChainChecker, line: str, reader: _Lines) -> None:
    """The exporter's own layout: hash the ``fields`` text exactly as written."""
    if line[_P + 64 : _E] != _MIDDLE or line[_E + 64 : _F] != _FIELDS:
        return _entry_object(checker, _json(line), reader)
    try:
        fields, end = _DECODER.raw_decode(line, _F)
    except ValueError:
        return _entry_object(checker, _json(line), reader)
    if not isinstance(fields, dict) or not isinstance(fields.get("id"), int):
        return _entry_object(checker, _json(line), reader)
    if not _exporters_tail(line, end):  # anything after the fields but the evidence: read it all
        return _entry_object(checker, _json(line), reader)
    _checked(
        checker, reader, fields["id"], fields, line[_P : _P + 64], line[_E : _E + 64], line[_F:end]
    )
    return None


def _exporters_tail(line: str, start: int) -> bool:
    """Whether the line goes on from ``start`` exactly as the exporter ends it: the evidence
    status, the evidence (one JSON value) and the closing brace, nothing more (no second
    ``fields`` that a reader would take for the one verified)."""
    tail = _TAIL.match(line, start)
    if tail is None:
        return False
    try:
        _, end = _DECODER.raw_decode(line, tail.end())
    except ValueError:
        return False
    return line[end:].rstrip("\r\n") == "}"


def _entry_object(checker: ChainChecker, item: dict[str, Any], reader: _Lines) -> None:
    fields = item.get("fields")
    if not isinstance(fields, dict) or not isinstance(fields.get("id"), int):
        raise Failed(Problem("malformed", None, "an entry line without readable fields"))
    prev_hash, entry_hash = item.get("prev_hash"), item.get("entry_hash")
    if not isinstance(prev_hash, str) or not isinstance(entry_hash, str):
        raise Failed(Problem("malformed", fields["id"], "an entry line without its hashes"))
    _checked(checker, reader, fields["id"], fields, prev_hash, entry_hash, None)


def _csv_entry(checker: ChainChecker, cells: dict[str, str]) -> None:
    try:
        fields: dict[str, Any] = {name: cells[name] for name in FIELD_NAMES}
        fields["id"] = int(fields["id"])
        for nullable in ("notice_id", "valid_until"):
            fields[nullable] = fields[nullable] or None
        prev_hash, entry_hash = cells["prev_hash"], cells["entry_hash"]
    except (KeyError, ValueError) as exc:
        raise Failed(Problem("malformed", None, f"unreadable CSV row: {exc}")) from None
    checker.entry(fields["id"], fields, prev_hash, entry_hash)


def _checked(
    checker: ChainChecker,
    reader: _Lines,
    entry_id: int,
    fields: dict[str, Any],
    prev_hash: str,
    entry_hash: str,
    text: str | None,
) -> None:
    try:
        checker.entry(entry_id, fields, prev_hash, entry_hash, text)
    except Failed as exc:
        problem = exc.problem
        if problem.kind == "deleted" and problem.entry_id is not None:
            moved = _seen_later(reader, problem.entry_id, entry_id)
            if moved is not None:
                raise Failed(
                    Problem(
                        "reordered",
                        entry_id,
                        f"entry {entry_id} is out of order: entry {moved} comes after it",
                    )
                ) from None
        raise


def _seen_later(reader: _Lines, low: int, high: int) -> int | None:
    """Does an id in [low, high) come later in the file? Then lines were moved, not deleted."""
    number = reader.number
    for count, line in enumerate(reader):
        if count >= LOOKAHEAD:
            break
        try:
            item = json.loads(line.lstrip("#"))
            found = item["fields"]["id"] if isinstance(item, dict) and "fields" in item else None
        except (ValueError, KeyError, TypeError):
            try:
                found = int(next(csv.reader([line]))[0])
            except (ValueError, IndexError):
                continue
        if isinstance(found, int) and low <= found < high:
            reader.number = number
            return found
    reader.number = number
    return None


def _finish(checker: ChainChecker, header: dict[str, Any], trailer: dict[str, Any] | None) -> None:
    if trailer is None:
        raise Failed(
            Problem(
                "deleted",
                None,
                "the file ends without its signed trailer: it was cut short",
            )
        )
    head = header["head"]
    end = trailer.get("checkpoint")
    if end is None:
        raise Failed(Problem("deleted", None, "the trailer's export checkpoint is missing"))
    cp = Checkpoint.from_dict(end)
    checker.signed_statement(cp, what="export checkpoint")
    if cp.last_id > checker.last_id:
        raise Failed(
            Problem(
                "deleted",
                checker.last_id + 1,
                f"the export was signed as ending at entry {cp.last_id}; "
                f"the file ends at entry {checker.last_id}",
            )
        )
    if cp.last_id < checker.last_id:
        raise Failed(
            Problem(
                "inserted",
                cp.last_id + 1,
                f"the export was signed as ending at entry {cp.last_id}; "
                f"entries up to {checker.last_id} follow it",
            )
        )
    if cp.entry_hash != checker.last_hash:
        raise Failed(
            Problem(
                "edited",
                cp.last_id,
                f"entry {cp.last_id}'s hash differs from the one signed at export",
            )
        )
    head_cp = trailer.get("head_checkpoint")
    if head_cp is not None:
        cp = Checkpoint.from_dict(head_cp)
        checker.signed_statement(cp, what="ledger head checkpoint")
        if (cp.last_id, cp.entry_hash) != (head.get("id"), head.get("hash")):
            raise Failed(
                Problem("edited", None, "the header's ledger head differs from the signed one")
            )
    elif head.get("id"):
        raise Failed(Problem("deleted", None, "the trailer's ledger head checkpoint is missing"))
    if int(trailer.get("entries", -1)) != checker.entries:
        raise Failed(
            Problem(
                "deleted" if int(trailer.get("entries", -1)) > checker.entries else "inserted",
                None,
                f"the trailer counts {trailer.get('entries')} entries, the file has "
                f"{checker.entries}",
            )
        )
    _span(checker, header, trailer.get("span"))
    _tail(checker, head, trailer.get("next"))


def _span(checker: ChainChecker, header: dict[str, Any], span: Any) -> None:
    """The trailer's signed statement of where the export starts and ends: the header's anchor
    is not signed on its own, so without it entries cut from the start (and the anchor moved to
    the last one cut) would go unseen."""
    if not isinstance(span, dict):
        raise Failed(Problem("deleted", None, "the trailer's signed span is missing"))
    try:
        anchor = (int(span["anchor_id"]), str(span["anchor_hash"]))
        last = (int(span["last_id"]), str(span["last_hash"]))
        signed_at, key, signature = (
            str(span["signed_at"]),
            str(span["public_key"]),
            span["signature"],
        )
        message = export_span_message(*anchor, *last, signed_at)
        header_anchor = (int(header["anchor"]["id"]), str(header["anchor"]["hash"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise Failed(Problem("malformed", None, f"unreadable signed span: {exc}")) from None
    if checker.key is not None and key != checker.key:
        raise Failed(
            Problem("bad_checkpoint", None, f"the span is signed by key {key}, not {checker.key}")
        )
    if not verify_signature(key, message, str(signature)):
        raise Failed(
            Problem(
                "bad_checkpoint", None, "the span's signature does not verify (forged or altered)"
            )
        )
    if header_anchor != anchor:
        raise Failed(
            Problem(
                "deleted" if header_anchor[0] > anchor[0] else "edited",
                anchor[0] + 1,
                f"the export was signed as starting after entry {anchor[0]}; "
                f"the file starts after entry {header_anchor[0]}",
            )
        )
    if last != (checker.last_id, checker.last_hash):
        raise Failed(
            Problem(
                "edited",
                last[0],
                f"the export was signed as ending at entry {last[0]}; "
                f"the file ends at entry {checker.last_id}",
            )
        )


def _tail(checker: ChainChecker, head: dict[str, Any], following: Any) -> None:
    """The span ends the ledger (no next entry): its last entry must be the signed head."""
    if following is None:
        head_id = int(head.get("id") or 0)
        if checker.last_id < head_id:
            raise Failed(
                Problem(
                    "deleted",
                    checker.last_id + 1,
                    f"{span(checker.last_id + 1, head_id)} missing: the ledger head "
                    f"signed at export is entry {head_id}",
                )
            )
        if checker.last_id > head_id:
            raise Failed(
                Problem(
                    "inserted",
                    head_id + 1,
                    f"entries past the signed ledger head (entry {head_id}) were exported: "
                    "they were added outside the ledger",
                )
            )
        if checker.last_id == head_id and checker.last_hash != head.get("hash"):
            raise Failed(
                Problem("edited", head_id, f"entry {head_id} differs from the signed ledger head")
            )
    elif following.get("prev_hash") != checker.last_hash:
        raise Failed(
            Problem(
                "deleted",
                checker.last_id + 1,
                f"entry {following.get('id')} (after the export) does not chain to entry "
                f"{checker.last_id}: entries between them are missing",
            )
        )


# the database
def verify_database(
    sessions: sessionmaker[Session],
    *,
    trusted_key: str | None = None,
    batch_size: int = BATCH,
    source: str = "database",
) -> VerifyResult:
    """Every entry in id order, every stored checkpoint, then the tail against ``ledger_head``.
    Entries appended while it runs are followed until the head and the last row agree."""
    checker: ChainChecker | None = None
    with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        try:
            head_id, _, max_id = _head_and_last(session)
            # rows past the head in one consistent read cannot be appends still in flight
            checker = ChainChecker(
                trusted_key=trusted_key,
                head_id=head_id if max_id is not None and max_id > (head_id or 0) else None,
                id_bound=max(max_id or 0, head_id or 0),
            )
            after = 0
            while True:
                after = _stream(session, checker, after, batch_size)
                head_id, head_hash, max_id = _head_and_last(session)
                if max_id is None or max_id <= after:
                    break
            for cp in _db_checkpoints(session, after, None):
                checker.checkpoint(cp)  # signs an entry past the last one: a deleted tail
            _tail_of_table(checker, head_id, head_hash, max_id)
        except Failed as exc:
            return failed(source, checker, exc.problem)
    return checker.result(source)


def _stream(session: Session, checker: ChainChecker, after: int, batch_size: int) -> int:
    while True:
        rows = read_entries(session, after=after, upper=None, limit=batch_size)
        if not rows:
            return after
        upper = rows[-1][_ID]
        pending = iter(_db_checkpoints(session, after, upper))
        cp = next(pending, None)
        for row in rows:
            entry_id = row[_ID]
            while cp is not None and cp.last_id < entry_id:
                checker.checkpoint(cp)
                cp = next(pending, None)
            values = row[: len(FIELD_NAMES)]
            fields = dict(zip(FIELD_NAMES, values, strict=True))
            checker.entry(entry_id, fields, row[PREV], row[HASH], canonical_values(values))
        while cp is not None:
            checker.checkpoint(cp)
            cp = next(pending, None)
        after = upper


def _head_and_last(session: Session) -> tuple[int | None, str | None, int | None]:
    """The head row and the last entry's id in one statement (one snapshot on any backend)."""
    head = LedgerHead.__table__
    row = session.execute(
        select(
            select(head.c.last_id).where(head.c.id == 1).scalar_subquery(),
            select(head.c.last_hash).where(head.c.id == 1).scalar_subquery(),
            select(func.max(EVENTS.c.id)).scalar_subquery(),
        )
    ).one()
    return row[0], row[1], row[2]


def _db_checkpoints(session: Session, after: int, upper: int | None) -> list[Checkpoint]:
    query = select(ConsentCheckpoint).where(ConsentCheckpoint.last_id > after)
    if upper is not None:
        query = query.where(ConsentCheckpoint.last_id <= upper)
    return [
        Checkpoint(cp.last_id, cp.entry_hash, cp.signed_at.isoformat(), cp.public_key, cp.signature)
        for cp in session.scalars(query.order_by(ConsentCheckpoint.last_id, ConsentCheckpoint.id))
    ]


def _tail_of_table(
    checker: ChainChecker, head_id: int | None, head_hash: str | None, max_id: int | None
) -> None:
    if head_id is None:
        if max_id is not None:
            raise Failed(Problem("deleted", None, "the ledger_head row is missing"))
        return
    if head_id > checker.last_id:
        raise Failed(
            Problem(
                "deleted",
                checker.last_id + 1,
                f"{span(checker.last_id + 1, head_id)} missing: the ledger head "
                f"says the chain ends at entry {head_id}",
            )
        )
    if head_id < checker.last_id:
        raise Failed(
            Problem(
                "inserted",
                head_id + 1,
                f"{span(head_id + 1, checker.last_id)} past the ledger head "
                f"(entry {head_id}): added outside the ledger",
            )
        )
    if head_hash != checker.last_hash:
        raise Failed(
            Problem("edited", head_id, f"entry {head_id}'s hash differs from the ledger head's")
        )
