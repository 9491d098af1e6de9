"""Tampering with the consent ledger behind the engine's back is found and named.

A ledger is built through the HTTP API (three shoppers granting and withdrawing), then rows are
changed with direct SQL, as someone with database access could: a field edited, a middle entry
deleted, the newest entry deleted, two entries' contents swapped, a forged entry appended with a
correctly computed hash, a checkpoint altered or re-signed with another key. Each must be caught
both by verifying the database and by verifying an NDJSON export made afterwards, naming the
right entry. The same is done to an exported file's lines. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import Connection, delete, insert, select, update

from api.app import create_app
from api.runtime import Runtime
from consent.crypto import checkpoint_message
from consent.domain import chain_hash
from consent.ledger import event_fields
from consent.models import ConsentCheckpoint, ConsentEvent, LedgerHead
from consent.verify import verify_database, verify_ndjson
from core.clock import ManualClock
from core.settings import INSECURE_KEYS
from tests.conftest import SmtpInbox, Stack

pytestmark = pytest.mark.integration

MANAGER = {"X-API-Key": INSECURE_KEYS["manager"]}
SDK_KEY = {"X-API-Key": INSECURE_KEYS["sdk"]}
COMPLIANCE = {"X-API-Key": INSECURE_KEYS["compliance"]}
EVENTS = ConsentEvent.__table__
CHECKPOINTS = ConsentCheckpoint.__table__
HEAD = LedgerHead.__table__


@dataclass
class Ledger:
    runtime: Runtime
    client: TestClient
    events: list[dict[str, Any]]

    def sql(self, change: Callable[[Connection], None]) -> None:
        with self.runtime.engine.begin() as connection:
            change(connection)

    def verify_db(self) -> Any:
        return verify_database(
            self.runtime.sessions, trusted_key=self.runtime.ledger_config.signer.public_key
        )

    def export(self) -> str:
        response = self.client.get("/v1/compliance/ledger.ndjson", headers=COMPLIANCE)
        assert response.status_code == 200, response.text
        return response.text

    def verify_file(self, text: str | None = None) -> Any:
        return verify_ndjson(io.StringIO(text if text is not None else self.export()))


@pytest.fixture
def ledger(stack: Stack, clock: ManualClock, smtp: tuple[SmtpInbox, int]) -> Iterator[Ledger]:
    settings = stack.settings(ledger_checkpoint_every=5, run_scheduler=False, smtp_port=smtp[1])
    runtime = Runtime.build(settings, clock=clock)
    runtime.start()
    client = TestClient(create_app(runtime=runtime))
    for purpose in ("location_tracking", "marketing_offers"):
        notice = {"purpose": purpose, "version": "n-1", "text": f"We use {purpose}."}
        assert client.post("/v1/manager/notices", headers=MANAGER, json=notice).status_code == 201
    for n in range(3):
        device = client.post(
            "/v1/sdk/devices",
            headers=SDK_KEY,
            json={"customer_ref": f"cust-{n}", "platform": "ios", "email": f"s{n}@example.com"},
        ).json()
        auth = {"Authorization": f"Bearer {device['token']}"}
        for purpose, channel, granted in (
            ("location_tracking", None, True),
            ("marketing_offers", "email", True),
            ("marketing_offers", "push", True),
            ("marketing_offers", "email", False),
        ):
            body = {
                "purpose": purpose,
                "channel": channel,
                "granted": granted,
                "notice_version": "n-1",
            }
            response = client.post("/v1/sdk/consents", headers=auth, json=body)
            assert response.status_code == 201, response.text
    with runtime.engine.connect() as connection:
        events = [
            dict(r._mapping) for r in connection.execute(select(EVENTS).order_by(EVENTS.c.id))
        ]
    try:
        yield Ledger(runtime, client, events)
    finally:
        client.close()
        runtime.stop()


def _restore(ledger: Ledger, saved: tuple[list[dict[str, Any]], ...]) -> None:
    events, checkpoints, head = saved

    def put_back(connection: Connection) -> None:
        for table, rows in ((EVENTS, events), (CHECKPOINTS, checkpoints), (HEAD, head)):
            connection.execute(delete(table))
            connection.execute(insert(table), rows)

    ledger.sql(put_back)


def _saved(ledger: Ledger) -> tuple[list[dict[str, Any]], ...]:
    with ledger.runtime.engine.connect() as connection:
        return tuple(
            [dict(r._mapping) for r in connection.execute(select(t))]
            for t in (EVENTS, CHECKPOINTS, HEAD)
        )


def _swap(first: int, second: int) -> Callable[[Connection], None]:
    def change(connection: Connection) -> None:
        rows = {
            r.id: {k: v for k, v in r._mapping.items() if k != "id"}
            for r in connection.execute(select(EVENTS).where(EVENTS.c.id.in_([first, second])))
        }
        connection.execute(update(EVENTS).where(EVENTS.c.id == first).values(**rows[second]))
        connection.execute(update(EVENTS).where(EVENTS.c.id == second).values(**rows[first]))

    return change


def _forge_entry(last: dict[str, Any]) -> Callable[[Connection], None]:
    """An entry appended by hand, with a hash computed exactly as the ledger would."""

    def change(connection: Connection) -> None:
        at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
        forged = ConsentEvent(
            **{
                k: last[k]
                for k in (
                    "subject_id",
                    "purpose",
                    "channel",
                    "notice_id",
                    "notice_version",
                    "method",
                    "evidence_sealed",
                )
            },
            id=last["id"] + 1,
            state="given",
            occurred_at=at,
            valid_until=None,
            recorded_at=at,
        )
        fields = event_fields(forged)
        connection.execute(
            insert(EVENTS).values(
                **fields,
                prev_hash=last["entry_hash"],
                entry_hash=chain_hash(last["entry_hash"], fields),
            )
        )

    return change


def _resign(last_id: int, entry_hash: str) -> Callable[[Connection], None]:
    """A checkpoint signed with a key that is not the engine's."""

    def change(connection: Connection) -> None:
        key = Ed25519PrivateKey.generate()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex()
        )
        signed_at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
        signature = key.sign(checkpoint_message(last_id, entry_hash, signed_at.isoformat())).hex()
        connection.execute(
            update(CHECKPOINTS)
            .where(CHECKPOINTS.c.last_id == last_id)
            .values(public_key=public, signature=signature, signed_at=signed_at)
        )

    return change


def test_every_kind_of_tampering_is_found_and_named(ledger: Ledger) -> None:
    events = ledger.events
    assert len(events) == 12
    for result in (ledger.verify_db(), ledger.verify_file()):
        assert result.ok, result.summary()
        assert (result.entries, result.last_id) == (12, 12)
        assert result.checkpoints >= 2  # stored every 5 entries, plus the export's own
    withdrawn = next(e["id"] for e in events if e["state"] == "withdrawn")
    last = events[-1]
    scenarios: list[tuple[str, Callable[[Connection], None], str, int]] = [
        (
            "edit a field",
            lambda c: c.execute(
                update(EVENTS).where(EVENTS.c.id == withdrawn).values(state="given")
            ),
            "edited",
            withdrawn,
        ),
        (
            "delete a middle entry",
            lambda c: c.execute(delete(EVENTS).where(EVENTS.c.id == 7)),
            "deleted",
            7,
        ),
        (
            "delete the newest entry",
            lambda c: c.execute(delete(EVENTS).where(EVENTS.c.id == last["id"])),
            "deleted",
            last["id"],
        ),
        ("swap two entries' contents", _swap(3, 9), "reordered", 3),
        ("append a forged entry", _forge_entry(last), "inserted", last["id"] + 1),
        (
            "alter a checkpoint's hash",
            lambda c: c.execute(
                update(CHECKPOINTS)
                .where(CHECKPOINTS.c.last_id == 5)
                .values(entry_hash=events[3]["entry_hash"])
            ),
            "bad_checkpoint",
            5,
        ),
        (
            "re-sign a checkpoint with another key",
            _resign(10, events[9]["entry_hash"]),
            "bad_checkpoint",
            10,
        ),
    ]
    saved = _saved(ledger)
    found = []
    for name, change, kind, entry_id in scenarios:
        ledger.sql(change)
        for where, result in (("database", ledger.verify_db()), ("file", ledger.verify_file())):
            problem = result.problem
            found.append(
                (
                    name,
                    where,
                    problem.kind if problem else "ok",
                    problem.entry_id if problem else None,
                )
            )
            assert not result.ok and problem is not None, f"{name}: {where} not detected"
            assert (problem.kind, problem.entry_id) == (kind, entry_id), (
                f"{name} ({where}): {result.summary()}"
            )
        _restore(ledger, saved)
    assert len(found) == 2 * len(scenarios)
    assert ledger.verify_db().ok


def _lines(text: str) -> tuple[list[str], list[int]]:
    lines = text.splitlines(keepends=True)
    return lines, [i for i, line in enumerate(lines) if line.startswith('{"type":"entry"')]


def test_an_exported_file_edited_in_any_way_fails_verification(ledger: Ledger) -> None:
    lines, at = _lines(ledger.export())
    assert verify_ndjson(lines).ok

    def check(changed: list[str], kind: str, entry_id: int | None) -> None:
        result = verify_ndjson(changed)
        assert result.problem is not None, "not detected"
        assert (result.problem.kind, result.problem.entry_id) == (kind, entry_id), result.summary()

    edited = list(lines)
    edited[at[4]] = edited[at[4]].replace('"method":"sdk"', '"method":"api"')
    check(edited, "edited", 5)
    without = [line for i, line in enumerate(lines) if i != at[5]]
    check(without, "deleted", 6)
    moved = list(lines)
    moved[at[2]], moved[at[8]] = moved[at[8]], moved[at[2]]
    check(moved, "reordered", 9)
    doubled = list(lines)
    doubled.insert(at[6], lines[at[6]])
    check(doubled, "inserted", 7)
    check(lines[: at[-1]] + lines[at[-1] + 1 :], "deleted", 12)  # newest entry dropped
    check(lines[:-1], "deleted", None)  # the signed trailer cut off
    tail = lines[-1].replace('"entries":12', '"entries":11')
    check([*lines[:-1], tail], "inserted", None)  # the file holds more than it was signed with
    # A second "fields" at the end of a line: readers keep the last one, so it must not verify.
    entry = json.loads(lines[at[3]])
    forged = {**entry["fields"], "state": "withdrawn"}
    second = lines[at[3]].rstrip("\n")[:-1] + ',"fields":' + json.dumps(forged) + "}\n"
    assert json.loads(second)["fields"]["state"] == "withdrawn"
    check([*lines[: at[3]], second, *lines[at[3] + 1 :]], "malformed", None)


def test_entries_cut_from_the_start_of_an_export_are_found(ledger: Ledger) -> None:
    """The header's anchor is not signed by itself: the trailer's signed span says where the
    export starts, so dropping the first entries and moving the anchor to the last one dropped
    (with the count in the trailer lowered to match) is found."""
    lines, at = _lines(ledger.export())
    header, trailer = json.loads(lines[0]), json.loads(lines[-1])
    second = json.loads(lines[at[1]])
    header["anchor"] = {"id": second["fields"]["id"], "hash": second["entry_hash"]}
    header["first_id"] = second["fields"]["id"] + 1
    trailer["entries"] -= 2
    kept = [line for i, line in enumerate(lines[1:-1], 1) if i not in at[:2]]
    cut = [json.dumps(header) + "\n", *kept, json.dumps(trailer) + "\n"]

    result = verify_ndjson(cut)

    assert result.problem is not None, "not detected"
    assert (result.problem.kind, result.problem.entry_id) == ("deleted", 1), result.summary()
