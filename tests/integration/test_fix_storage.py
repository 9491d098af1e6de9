"""``PingRepository.add_fixes`` on both stacks: a few fixes go by one insert, a batch by binary
``COPY`` on PostgreSQL; either way every value comes back as it was given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from core.db import make_session_factory, upgrade_database
from geo.domain import Fix
from geo.models import Ping
from geo.repository import COPY_FROM_ROWS, PING_COLUMN_TYPES, PING_COLUMNS, PingRepository
from tests.conftest import Stack

RECEIVED = datetime(2026, 10, 25, 0, 30, 0, 123_456, tzinfo=UTC)


def _fix(i: int) -> Fix:
    return Fix(
        f"dev-{i % 3}",
        24 if i == 0 else 24.9414 + i * 1e-7 + 0.1 + 0.2,  # an int where a float is expected
        -33.868820000000001 - i * 1e-6,
        # a daylight-saving change in Helsinki; an offset other than UTC on the way in
        datetime(2026, 10, 25, 3, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=3)))
        + timedelta(seconds=i),
        None if i % 2 else 8.0 + 1 / 3,
        None if i % 3 else 1.25,
        None if i % 4 else 359.999,
        bool(i % 5 == 0),
        None if i % 2 else f"ping-ö-{i}",
    )


@pytest.mark.parametrize("count", [3, COPY_FROM_ROWS, 500])
def test_fixes_come_back_exactly(stack: Stack, count: int) -> None:
    engine = stack.engine()
    try:
        upgrade_database(engine)
        fixes = [_fix(i) for i in range(count)]
        subjects = [f"subject-{i % 3}" for i in range(count)]
        statuses = ["used" if i % 7 else "inaccurate" for i in range(count)]
        sessions = make_session_factory(engine)
        with sessions() as session, session.begin():
            PingRepository(session).add_fixes(subjects, fixes, statuses, RECEIVED)
        with sessions() as session:
            stored = session.scalars(select(Ping).order_by(Ping.id)).all()
    finally:
        engine.dispose()
    assert [
        (
            p.device_id,
            p.subject_id,
            p.lon,
            p.lat,
            p.accuracy_m,
            p.speed_mps,
            p.heading_deg,
            p.is_mock,
            p.client_id,
            p.status,
            p.recorded_at,
            p.received_at,
        )
        for p in stored
    ] == [
        (
            f.device_id,
            s,
            f.lon,
            f.lat,
            f.accuracy_m,
            f.speed_mps,
            f.heading_deg,
            f.mock,
            f.ping_id,
            status,
            f.recorded_at,
            RECEIVED,
        )
        for f, s, status in zip(fixes, subjects, statuses, strict=True)
    ]
    assert stored[0].recorded_at.tzinfo is not None


def test_the_copy_types_are_the_tables_own(stack: Stack) -> None:
    """Binary ``COPY`` is told each column's type; they must be the migrated table's."""
    if stack.name != "postgres-redis":
        pytest.skip("SQLite has no COPY")
    engine = stack.engine()
    try:
        upgrade_database(engine)
        with engine.connect() as connection:
            found = dict(
                connection.execute(
                    text(
                        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
                        "WHERE attrelid = 'pings'::regclass AND attnum > 0"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    names = {
        "character varying": "varchar",
        "double precision": "float8",
        "boolean": "bool",
        "timestamp with time zone": "timestamptz",
    }
    assert {c: names.get(found[c], found[c]) for c in PING_COLUMNS} == PING_COLUMN_TYPES
