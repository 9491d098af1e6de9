"""``core.db.insert_at_once`` (and ``insert_together``, the same statement in the caller's
transaction) against the real PostgreSQL server: the values come back exactly as
they were given, the statement's text does not depend on the number of rows (so the driver
converts it once and the server can prepare it), and a value JSON cannot carry is refused
before anything is written."""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from core.db import insert_at_once, insert_together, make_engine

FIXES = ("device_id", "lon", "lat", "accuracy_m", "is_mock", "client_id", "recorded_at")
NOTES = ("subject_id", "seq", "details", "decided_at")


@pytest.fixture
def engine(postgres_available: str) -> Iterator[tuple[Engine, str, str]]:
    suffix = secrets.token_hex(4)
    fixes, notes = f"t_fixes_{suffix}", f"t_notes_{suffix}"
    engine = make_engine(postgres_available, pool_size=1, max_overflow=0)
    with engine.begin() as connection:
        connection.execute(
            text(
                f"CREATE TABLE {fixes} (id bigserial PRIMARY KEY, device_id varchar(40), "
                "lon float8, lat float8, accuracy_m float8, is_mock boolean, "
                "client_id varchar(64), recorded_at timestamptz)"
            )
        )
        connection.execute(
            text(
                f"CREATE TABLE {notes} (id bigserial PRIMARY KEY, subject_id varchar(40), "
                "seq bigint, details json, decided_at timestamptz)"
            )
        )
    try:
        yield engine, fixes, notes
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE {fixes}, {notes}"))
        engine.dispose()


def _fix(i: int) -> tuple[Any, ...]:
    return (
        f"dev-{i}-ö\"'\\",  # quotes, a backslash and a non-ASCII letter survive
        24.9414 + i * 1e-7 + 0.1 + 0.2,  # a float with no short decimal form
        -33.868820000000001 - i,
        None if i % 2 else 8.0 + 1 / 3,
        bool(i % 3),
        None if i % 2 else f"ping-{i}",
        datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC) + timedelta(seconds=i),
    )


def _note(i: int) -> tuple[Any, ...]:
    return (
        f"subject-{i}",
        2**62 + i,
        {"device_id": f"dev-{i}", "fixes": i, "nested": {"x": [1.5, None, True]}, "€": "ok"},
        datetime(2026, 10, 25, 1, 30, tzinfo=timezone(timedelta(hours=3))),
    )


def test_values_come_back_exactly(engine: tuple[Engine, str, str]) -> None:
    sa_engine, fixes, notes = engine
    fix_rows = [_fix(i) for i in range(5)]
    note_rows = [_note(i) for i in range(3)]
    insert_at_once(sa_engine, [(fixes, FIXES, fix_rows), (notes, NOTES, note_rows)])
    with sa_engine.connect() as connection:
        stored_fixes = connection.execute(
            text(f"SELECT {', '.join(FIXES)} FROM {fixes} ORDER BY id")
        ).all()
        stored_notes = connection.execute(
            text(f"SELECT {', '.join(NOTES)} FROM {notes} ORDER BY id")
        ).all()
    assert [tuple(r) for r in stored_fixes] == fix_rows
    assert [tuple(r) for r in stored_notes] == note_rows


def test_the_statement_is_the_same_for_any_number_of_rows(
    engine: tuple[Engine, str, str],
) -> None:
    sa_engine, fixes, notes = engine
    seen: list[str] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        seen.append(sql)

    event.listen(sa_engine, "before_cursor_execute", statement)
    try:
        for n in (1, 2, 7, 31):
            insert_at_once(
                sa_engine,
                [(fixes, FIXES, [_fix(i) for i in range(n)]), (notes, NOTES, [_note(n)])],
            )
        insert_at_once(sa_engine, [(fixes, FIXES, [_fix(0)]), (notes, NOTES, [])])
    finally:
        event.remove(sa_engine, "before_cursor_execute", statement)
    assert len(set(seen[:4])) == 1, seen
    assert seen[0].startswith(f"WITH w0 AS (INSERT INTO {fixes} ")
    assert seen[4].startswith(f"INSERT INTO {fixes} ")  # a table with no rows is left out
    with sa_engine.connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {fixes}")).scalar() == 42
        assert connection.execute(text(f"SELECT count(*) FROM {notes}")).scalar() == 4


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (math.nan, "Out of range float"),
        (math.inf, "Out of range float"),
        (datetime(2026, 1, 1), "naive datetime"),  # noqa: DTZ001 - the value refused
        (b"\x00", "bytes cannot be written"),
    ],
)
def test_a_value_json_cannot_carry_is_refused_before_anything_is_written(
    engine: tuple[Engine, str, str], bad: Any, message: str
) -> None:
    sa_engine, fixes, notes = engine
    row = list(_fix(1))
    row[3] = bad
    with pytest.raises(ValueError, match=message):
        insert_at_once(sa_engine, [(notes, NOTES, [_note(1)]), (fixes, FIXES, [tuple(row)])])
    with sa_engine.connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {notes}")).scalar() == 0


def test_together_the_rows_belong_to_the_callers_transaction(
    engine: tuple[Engine, str, str],
) -> None:
    sa_engine, fixes, notes = engine
    tables = [(fixes, FIXES, [_fix(i) for i in range(3)]), (notes, NOTES, [_note(0)])]

    with sa_engine.connect() as connection, connection.begin() as transaction:
        insert_together(connection, tables)
        inside = connection.execute(text(f"SELECT count(*) FROM {fixes}")).scalar()
        transaction.rollback()
    with sa_engine.connect() as connection:
        after_rollback = connection.execute(text(f"SELECT count(*) FROM {fixes}")).scalar()
    with sa_engine.begin() as connection:
        insert_together(connection, tables)
    with sa_engine.connect() as connection:
        stored = connection.execute(
            text(f"SELECT {', '.join(FIXES)} FROM {fixes} ORDER BY id")
        ).all()
        stored_notes = connection.execute(text(f"SELECT count(*) FROM {notes}")).scalar()

    assert (inside, after_rollback) == (3, 0)
    assert [tuple(r) for r in stored] == tables[0][2]
    assert stored_notes == 1
