"""Raw pings are purged after the retention period by the scheduler's periodic job."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.clock import ManualClock
from geo.models import FenceEvent, Ping
from geo.retention import PingRetention
from tests.api.conftest import INSIDE, OUTSIDE, EngineFactory


def test_the_scheduled_purge_removes_pings_older_than_the_retention_only(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(ping_retention_hours=24)
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    walker = engine.shopper()
    assert engine.ping(walker, OUTSIDE).status_code == 200
    engine.clock.advance(timedelta(seconds=30))
    assert engine.ping(walker, INSIDE).status_code == 200  # enter: an event that outlives pings
    engine.clock.advance(timedelta(hours=23))
    assert engine.ping(walker, INSIDE).status_code == 200
    assert engine.count(Ping) == 3

    job = engine.runtime.scheduler._scheduler.get_job("ping-retention")
    assert job is not None, "the purge is registered with the leading scheduler"
    assert job.trigger.interval == timedelta(seconds=engine.runtime.settings.ping_purge_interval_s)
    job.func()
    assert engine.count(Ping) == 3, "nothing is older than 24 h yet"

    engine.clock.advance(timedelta(hours=1))  # the first is now 24 h 00 min 30 s old...
    job.func()
    assert engine.count(Ping) == 2, "...and gone; the second is exactly 24 h old and stays"
    engine.clock.advance(timedelta(seconds=1))
    job.func()
    assert engine.count(Ping) == 1, "the latest (1 h old) stays"
    assert engine.count(FenceEvent) >= 1, "fence events are not raw pings"


def test_the_purge_runs_in_batches_until_done(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api()
    walker = engine.shopper()
    for i in range(7):
        engine.clock.advance(timedelta(seconds=10))
        assert engine.ping(walker, (OUTSIDE[0] + i * 1e-5, OUTSIDE[1])).status_code == 200
    clock = ManualClock(engine.clock.now() + timedelta(hours=25))
    purge = PingRetention(engine.runtime.sessions, clock, timedelta(hours=24), batch=3)
    assert purge.purge() == 7
    assert engine.count(Ping) == 0
    assert purge.purge() == 0


def test_a_retention_period_must_be_positive(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api()
    with pytest.raises(ValueError, match="positive"):
        PingRetention(engine.runtime.sessions, engine.clock, timedelta(0))
