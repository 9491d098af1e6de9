"""The ledger's chain as a verifier sees it: the hashed fields, their canonical text, and a
checker fed entries and checkpoints one at a time (``consent.verify`` reads files and databases
into it).

Pure and streaming: one pass in id order, constant memory (the last two hashes, counters, the
expected signing key). For every entry the verifier recomputes ``entry_hash`` from the entry's
fields and its ``prev_hash``, checks that ``prev_hash`` is the previous entry's hash (the header's
anchor for the first one) and that ids increase; every checkpoint must carry a valid Ed25519
signature by the expected key over a hash equal to the recomputed one at its id. The tail is
checked against a signed statement (a file's trailer checkpoints) or the ``ledger_head`` row (the
database), so removing the newest entries is caught too. The result names the first bad record:
``edited``, ``deleted``, ``inserted``, ``reordered``, ``bad_checkpoint``, ``unchained`` (an entry
written before the chain existed) or ``malformed`` (a line that cannot be read).

Hashing goes through ``canonical_text``: the exact text ``consent.domain.canonical`` produces,
built faster for the field types a ledger entry has. Any mismatch is re-checked with
``consent.domain.chain_hash`` itself before it is reported, so the fast path can never raise a
false alarm, and it cannot hide one either (a match means SHA-256 saw the same bytes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from consent.crypto import checkpoint_message, verify_signature
from consent.domain import GENESIS_HASH, canonical, chain_hash

FORMAT = "offer-engine.consent-ledger"
FORMAT_VERSION = 1
# What the chain hash covers (``consent.ledger.event_fields``), in canonical (sorted) order.
FIELD_NAMES = (
    "channel",
    "evidence_sealed",
    "id",
    "method",
    "notice_id",
    "notice_version",
    "occurred_at",
    "purpose",
    "recorded_at",
    "state",
    "subject_id",
    "valid_until",
)
HASH_RULE = "entry_hash = sha256(prev_hash + '\\n' + fields); fields: canonical JSON, sorted keys"
REORDER_SEARCH = 100_000  # ids either side searched for the true place of a moved entry

FIELDS_TEMPLATE = "{" + ",".join(f"{encode_basestring_ascii(k)}:%s" for k in FIELD_NAMES) + "}"


def canonical_values(values: Sequence[Any]) -> str | None:
    """The canonical text of the fields given as values in ``FIELD_NAMES`` order, or None when
    one is of a type the fast path does not handle (str, int, None, datetime)."""
    parts: list[str] = []
    for value in values:
        cls = value.__class__
        if cls is str:
            parts.append(encode_basestring_ascii(value))
        elif value is None:
            parts.append("null")
        elif cls is int:
            parts.append(int.__repr__(value))
        elif cls is datetime:
            parts.append(encode_basestring_ascii(value.isoformat()))
        else:
            return None
    if len(parts) != len(FIELD_NAMES):
        return None
    return FIELDS_TEMPLATE % tuple(parts)


def canonical_text(fields: Mapping[str, Any]) -> str:
    """``consent.domain.canonical(fields).decode()``, fast for str / int / None / datetime."""
    if len(fields) == len(FIELD_NAMES):
        try:
            text = canonical_values([fields[name] for name in FIELD_NAMES])
        except KeyError:
            text = None
        if text is not None:
            return text
    return canonical(dict(fields)).decode()


def entry_hash_of(prev_hash: str, fields_text: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{fields_text}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # edited | deleted | inserted | reordered | bad_checkpoint | unchained | malformed
    entry_id: int | None
    message: str


@dataclass
class VerifyResult:
    source: str
    ok: bool = True
    entries: int = 0
    first_id: int | None = None
    last_id: int | None = None
    last_hash: str | None = None
    checkpoints: int = 0
    id_gaps: int = 0
    public_key: str | None = None
    problem: Problem | None = None
    line: int | None = None  # the file line of the problem (files only)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.problem is not None:
            where = f" (line {self.line})" if self.line else ""
            record = f" entry {self.problem.entry_id}" if self.problem.entry_id else ""
            return f"FAILED {self.problem.kind}{record}{where}: {self.problem.message}"
        span = f"ids {self.first_id}..{self.last_id}" if self.entries else "no entries"
        key = f" by key {self.public_key}" if self.public_key else ""
        gaps = f"; {self.id_gaps} id gap(s) with the chain intact" if self.id_gaps else ""
        return (
            f"OK: {self.entries} entries ({span}), hash chain intact, "
            f"{self.checkpoints} signed checkpoint(s) verified{key}{gaps}; "
            f"last hash {self.last_hash or GENESIS_HASH}"
        )

    def to_dict(self) -> dict[str, Any]:
        problem = None
        if self.problem is not None:
            problem = {
                "kind": self.problem.kind,
                "entry_id": self.problem.entry_id,
                "message": self.problem.message,
            }
        return {
            "ok": self.ok,
            "source": self.source,
            "entries": self.entries,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "last_hash": self.last_hash,
            "checkpoints": self.checkpoints,
            "id_gaps": self.id_gaps,
            "public_key": self.public_key,
            "problem": problem,
            "line": self.line,
            "notes": self.notes,
            "summary": self.summary(),
        }


class Failed(Exception):
    """Raised inside the checker; carries the first problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Checkpoint:
    last_id: int
    entry_hash: str
    signed_at: str
    public_key: str
    signature: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        try:
            return cls(
                int(data["last_id"]),
                str(data["entry_hash"]),
                str(data["signed_at"]),
                str(data["public_key"]),
                str(data["signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise Failed(Problem("malformed", None, f"unreadable checkpoint: {exc}")) from None


class ChainChecker:
    """Fed entries in file or id order and checkpoints where they fall; raises ``Failed``."""

    def __init__(
        self,
        *,
        anchor_id: int = 0,
        anchor_hash: str = GENESIS_HASH,
        trusted_key: str | None = None,
        expected_key: str | None = None,
        head_id: int | None = None,
        id_bound: int | None = None,
    ) -> None:
        if anchor_id == 0 and anchor_hash != GENESIS_HASH:
            raise Failed(Problem("malformed", None, "the anchor before entry 1 must be genesis"))
        self.last_id = anchor_id
        self.last_hash = anchor_hash
        self.before_last: tuple[int, str] | None = None
        self.trusted_key = trusted_key.lower() if trusted_key else None
        self.key = self.trusted_key or expected_key
        if self.trusted_key and expected_key and expected_key != self.trusted_key:
            raise Failed(
                Problem(
                    "bad_checkpoint",
                    None,
                    f"signed with key {expected_key}, not the trusted key {self.trusted_key}",
                )
            )
        self.head_id = head_id
        self.id_bound = id_bound if id_bound is not None else head_id  # for the move search
        self.entries = 0
        self.first_id: int | None = None
        self.checkpoints = 0
        self.id_gaps = 0

    # entries
    def entry(
        self,
        entry_id: int,
        fields: Mapping[str, Any],
        prev_hash: str,
        entry_hash: str,
        fields_text: str | None = None,
    ) -> None:
        if self.head_id is not None and entry_id > self.head_id:
            raise Failed(
                Problem(
                    "inserted",
                    entry_id,
                    f"entry {entry_id} lies past entry {self.head_id}, where the ledger head "
                    "(or the export) ends: it was added outside the ledger",
                )
            )
        if entry_id <= self.last_id:
            if self.entries and entry_id == self.last_id and entry_hash == self.last_hash:
                raise Failed(Problem("inserted", entry_id, f"entry {entry_id} appears twice"))
            if (
                self.entries
                and self.before_last is not None
                and prev_hash == self.before_last[1]
                and self._content_ok(fields, prev_hash, entry_hash, fields_text)
            ):
                raise Failed(
                    Problem(
                        "inserted",
                        self.last_id,
                        f"entry {self.last_id} is not part of the chain: entry {entry_id} "
                        f"chains directly to entry {self.before_last[0]}",
                    )
                )
            raise Failed(
                Problem(
                    "reordered",
                    entry_id,
                    f"entry {entry_id} appears after entry {self.last_id} (out of order)",
                )
            )
        if not self._content_ok(fields, prev_hash, entry_hash, fields_text):
            if not entry_hash:
                raise Failed(
                    Problem(
                        "unchained",
                        entry_id,
                        f"entry {entry_id} has no hash (written before the hash chain existed)",
                    )
                )
            owner = self._owner(fields, prev_hash, entry_hash, entry_id)
            if owner is not None:
                raise Failed(
                    Problem(
                        "reordered",
                        entry_id,
                        f"entry {entry_id} holds the content of entry {owner}: entries were moved",
                    )
                )
            raise Failed(
                Problem(
                    "edited",
                    entry_id,
                    f"entry {entry_id}'s content does not match its hash: a field was changed",
                )
            )
        if prev_hash != self.last_hash:
            self._broken_link(entry_id, prev_hash)
        if self.entries and entry_id > self.last_id + 1:
            self.id_gaps += 1
        self.before_last = (self.last_id, self.last_hash)
        self.last_id, self.last_hash = entry_id, entry_hash
        self.entries += 1
        if self.first_id is None:
            self.first_id = entry_id

    def _broken_link(self, entry_id: int, prev_hash: str) -> None:
        if self.before_last is not None and prev_hash == self.before_last[1]:
            raise Failed(
                Problem(
                    "inserted",
                    self.last_id,
                    f"entry {self.last_id} is not part of the chain: entry {entry_id} chains "
                    f"directly to entry {self.before_last[0]}",
                )
            )
        if entry_id > self.last_id + 1:
            raise Failed(
                Problem(
                    "deleted",
                    self.last_id + 1,
                    f"{span(self.last_id + 1, entry_id - 1)} missing: entry {entry_id} chains "
                    "to a hash that no entry before it has",
                )
            )
        what = f"entry {self.last_id}" if self.entries else f"the anchor (entry {self.last_id})"
        raise Failed(
            Problem(
                "edited",
                self.last_id if self.entries else entry_id,
                f"entry {entry_id} chains to a hash that {what} does not have: "
                f"{what} was changed and re-hashed, or entry {entry_id}'s link was changed",
            )
        )

    @staticmethod
    def _content_ok(
        fields: Mapping[str, Any], prev_hash: str, entry_hash: str, fields_text: str | None
    ) -> bool:
        text = fields_text if fields_text is not None else canonical_text(fields)
        if entry_hash_of(prev_hash, text) == entry_hash:
            return True
        try:  # the reference definition, so a fast-path difference never raises an alarm
            return chain_hash(prev_hash, dict(fields)) == entry_hash
        except (TypeError, ValueError):
            return False

    def _owner(
        self, fields: Mapping[str, Any], prev_hash: str, entry_hash: str, entry_id: int
    ) -> int | None:
        """The id this content was hashed under, when it is another one nearby (a move)."""
        if not isinstance(fields.get("id"), int):
            return None
        probe = dict(fields)
        bound = self.id_bound if self.id_bound is not None else entry_id + REORDER_SEARCH
        for distance in range(1, REORDER_SEARCH + 1):
            if entry_id - distance < 1 and entry_id + distance > bound:
                break
            for candidate in (entry_id - distance, entry_id + distance):
                if candidate < 1 or candidate > bound:
                    continue
                probe["id"] = candidate
                if entry_hash_of(prev_hash, canonical_text(probe)) == entry_hash:
                    return candidate
        return None

    # checkpoints
    def checkpoint(self, cp: Checkpoint, *, what: str = "checkpoint") -> None:
        signed = f"{what} for entry {cp.last_id} signed at {cp.signed_at}"
        if self.key is None:
            self.key = cp.public_key
        elif cp.public_key != self.key:
            trusted = "trusted" if self.trusted_key else "ledger's"
            raise Failed(
                Problem(
                    "bad_checkpoint",
                    cp.last_id,
                    f"{signed} is signed by key {cp.public_key}, not the {trusted} key {self.key}",
                )
            )
        self._signature(cp, signed)
        if cp.last_id > self.last_id:
            raise Failed(
                Problem(
                    "deleted",
                    cp.last_id,
                    f"entry {cp.last_id} is missing: the {signed} states it exists",
                )
            )
        if cp.last_id < self.last_id:
            raise Failed(
                Problem(
                    "reordered",
                    cp.last_id,
                    f"the {signed} is out of place (after entry {self.last_id})",
                )
            )
        if cp.entry_hash != self.last_hash:
            raise Failed(
                Problem(
                    "edited",
                    cp.last_id,
                    f"entry {cp.last_id}'s hash differs from the {signed}: an entry at or "
                    "before it was changed and the chain re-hashed",
                )
            )
        self.checkpoints += 1

    def signed_statement(self, cp: Checkpoint, *, what: str) -> None:
        """A checkpoint about an entry that is not in view (the ledger head beyond a range)."""
        if self.key is not None and cp.public_key != self.key:
            raise Failed(
                Problem(
                    "bad_checkpoint",
                    cp.last_id,
                    f"the {what} is signed by key {cp.public_key}, not {self.key}",
                )
            )
        self._signature(cp, f"the {what}")
        self.checkpoints += 1

    @staticmethod
    def _signature(cp: Checkpoint, label: str) -> None:
        message = checkpoint_message(cp.last_id, cp.entry_hash, cp.signed_at)
        if not verify_signature(cp.public_key, message, cp.signature):
            raise Failed(
                Problem(
                    "bad_checkpoint",
                    cp.last_id,
                    f"{label}: the signature does not verify (forged or altered)",
                )
            )

    def result(self, source: str) -> VerifyResult:
        return VerifyResult(
            source=source,
            entries=self.entries,
            first_id=self.first_id,
            last_id=self.last_id if self.entries else None,
            last_hash=self.last_hash if self.entries else None,
            checkpoints=self.checkpoints,
            id_gaps=self.id_gaps,
            public_key=self.key,
        )


def span(first: int, last: int) -> str:
    """'entry 5 is' / 'entries 5..7 are'."""
    return f"entry {first} is" if first == last else f"entries {first}..{last} are"


def failed(source: str, checker: ChainChecker | None, problem: Problem) -> VerifyResult:
    result = checker.result(source) if checker is not None else VerifyResult(source=source)
    result.ok = False
    result.problem = problem
    return result
