"""The PostgreSQL pool checks a connection before use only after it has been idle a while.

Against the real server: the backend behind a pooled connection is terminated, as a server
restart or an idle timeout would, and the next use must still work; a connection in steady
use costs no extra round trip.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from core.db import make_engine

IDLE_S = 0.2


@pytest.fixture
def engine(postgres_available: str) -> Iterator[Engine]:
    engine = make_engine(postgres_available, pool_size=1, max_overflow=0, ping_after_idle_s=IDLE_S)
    yield engine
    engine.dispose()


@pytest.fixture
def pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When the pool checked a connection with a round trip."""
    found: list[float] = []
    real = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        found.append(time.monotonic())
        return bool(real(dbapi_connection))

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return found


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(postgres_url: str, pid: int) -> None:
    admin = make_engine(postgres_url, pool_size=1, max_overflow=0)
    try:
        with admin.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    finally:
        admin.dispose()


def test_a_connection_in_steady_use_is_not_checked(engine: Engine, pings: list[float]) -> None:
    first = backend_pid(engine)
    for _ in range(20):
        assert backend_pid(engine) == first  # the same pooled connection each time

    assert pings == []


def test_an_idle_connection_is_checked_and_a_dead_one_replaced(
    engine: Engine, pings: list[float], postgres_available: str
) -> None:
    before = backend_pid(engine)
    terminate(postgres_available, before)
    time.sleep(IDLE_S * 2)

    after = backend_pid(engine)  # no error: the check found it dead, the pool connected anew

    assert after != before
    assert len(pings) == 1
    assert backend_pid(engine) == after  # and uses the new one from then on, unchecked
    assert len(pings) == 1


def test_a_connection_that_dies_in_use_fails_once_then_the_pool_is_renewed(
    engine: Engine, pings: list[float], postgres_available: str
) -> None:
    """The trade made for one round trip less per transaction: a connection broken between
    two uses less than ``IDLE_S`` apart fails its next statement; the pool then replaces it."""
    before = backend_pid(engine)
    terminate(postgres_available, before)

    with pytest.raises(OperationalError) as failed:
        backend_pid(engine)

    assert failed.value.connection_invalidated
    assert backend_pid(engine) != before
    assert pings == []
