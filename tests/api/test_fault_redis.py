"""Redis, the hot-state store, fails under a running engine: a private ``redis-server`` on its
own port is killed, stalled and brought back while the engine keeps running.

Invariant: losing the hot state loses no durable fact; while it is down the engine answers 503
(never 500), processes nothing and offers nothing without a consent check; when it returns the
same engine (no restart) serves again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from sqlalchemy import event, select

from consent.domain import Channel
from consent.models import ConsentEvent, ConsentReceipt
from core.state import HotStateUnavailable, device_lock
from geo.models import FenceEvent, Ping
from offers.models import Coupon, Delivery
from tests.api.conftest import INSIDE, OUTSIDE, EngineFactory
from tests.private_servers import PrivateRedis


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    try:
        yield server
    finally:
        server.close()


def _unavailable(response: object) -> None:
    assert response.status_code == 503, response.text  # type: ignore[attr-defined]
    assert response.json()["error"]["code"] == "unavailable"  # type: ignore[attr-defined]
    assert response.headers["Retry-After"]  # type: ignore[attr-defined]


def test_redis_killed_mid_run_answers_503_then_recovers_without_restart(
    make_engine_api: EngineFactory, private_redis: PrivateRedis
) -> None:
    engine = make_engine_api(redis_url=private_redis.url, run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    shopper = engine.shopper()
    assert engine.ping(shopper, OUTSIDE).status_code == 200

    private_redis.kill()
    engine.clock.advance(timedelta(seconds=20))
    _unavailable(engine.ping(shopper, INSIDE))
    _unavailable(engine.client.get("/health"))
    assert engine.count(Ping) == 1  # only the fix from before the failure
    assert engine.count(FenceEvent) == 0 and engine.count(Coupon) == 0
    assert engine.count(ConsentReceipt, ConsentReceipt.action == "ping") == 1

    private_redis.start()  # same port, empty: everything hot was lost
    engine.clock.advance(timedelta(seconds=20))
    assert engine.client.get("/health").status_code == 200
    back = engine.ping(shopper, INSIDE)
    assert back.status_code == 200, back.text
    assert [e["kind"] for e in back.json()["events"]] == ["enter"]
    assert len(back.json()["coupons"]) == 1
    assert engine.count(Ping) == 2 and engine.count(Coupon) == 1


def test_a_withdrawal_during_a_stall_is_refused_whole_so_no_stale_consent_survives(
    make_engine_api: EngineFactory, private_redis: PrivateRedis
) -> None:
    engine = make_engine_api(redis_url=private_redis.url, run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    shopper = engine.shopper()
    assert engine.ping(shopper, OUTSIDE).status_code == 200  # consent now cached in Redis
    link = engine.runtime.links.unsubscribe_url(
        shopper["subject_id"], Channel.EMAIL, engine.clock.now()
    )
    one_click = {"data": {"List-Unsubscribe": "One-Click"}}

    private_redis.pause()  # keeps its data, answers nothing
    try:
        _unavailable(engine.follow(link, "POST", **one_click))
    finally:
        private_redis.resume()
    with engine.runtime.sessions() as session:
        states = session.scalars(
            select(ConsentEvent.state).where(ConsentEvent.channel == "email")
        ).all()
    assert "withdrawn" not in states  # not recorded: the shopper's client is told to retry

    again = engine.follow(link, "POST", **one_click)
    assert again.status_code == 200, again.text
    engine.clock.advance(timedelta(seconds=20))
    entered = engine.ping(shopper, INSIDE)
    assert entered.status_code == 200, entered.text
    assert [e["kind"] for e in entered.json()["events"]] == ["enter"]
    assert entered.json()["coupons"] == []  # the cached grant did not outlive the withdrawal
    assert engine.count(Coupon) == 0


def test_no_delivery_goes_out_while_its_consent_cannot_be_checked(
    make_engine_api: EngineFactory, private_redis: PrivateRedis
) -> None:
    engine = make_engine_api(redis_url=private_redis.url, run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    shopper = engine.shopper()
    assert engine.ping(shopper, INSIDE).json()["coupons"]
    with engine.runtime.sessions() as session:
        [delivery] = session.scalars(select(Delivery)).all()

    private_redis.kill()
    with pytest.raises(HotStateUnavailable):
        engine.runtime.worker.deliver(delivery.id)
    assert engine.inbox.messages == []  # not sent without the channel's consent checked
    with engine.runtime.sessions() as session:
        kept = session.get(Delivery, delivery.id)
        assert kept is not None and kept.status == "pending"  # the claim was rolled back

    private_redis.start()
    report = engine.runtime.worker.deliver(delivery.id)
    assert report is not None and report.status == "sent", report
    assert len(engine.inbox.wait_for(1)) == 1


def test_redis_lost_between_the_commit_and_the_release_loses_and_repeats_nothing(
    make_engine_api: EngineFactory,
) -> None:
    """Redis goes away right after a ping group committed, before the group's presence is
    written and its device locks freed, and comes back with its data (an append-only file).
    The fixes are stored, so the request succeeds; the close is tried again until Redis
    answers, and the device's next ping finds the state the group left, not the one before."""
    durable = PrivateRedis(None, "--appendonly", "yes", "--appendfsync", "always").start()
    try:
        engine = make_engine_api(redis_url=durable.url, run_scheduler=False)
        store = engine.create_store()
        engine.create_campaign([store["id"]])
        shopper = engine.shopper()
        assert engine.ping(shopper, OUTSIDE).status_code == 200

        def lose_redis(_session: object) -> None:
            durable.kill()
            threading.Timer(1.0, durable.start).start()

        event.listen(engine.runtime.sessions, "after_commit", lose_redis, once=True)
        engine.clock.advance(timedelta(seconds=20))
        entered = engine.ping(shopper, INSIDE)
        assert entered.status_code == 200, entered.text
        assert [e["kind"] for e in entered.json()["events"]] == ["enter"]
        assert len(entered.json()["coupons"]) == 1

        prefix = engine.runtime.settings.redis_key_prefix
        lock = f"{prefix}lock:{device_lock(shopper['device_id'])}"
        watcher = redis.Redis(port=durable.port, socket_timeout=1.0)
        deadline = time.monotonic() + 5.0  # the lock itself would last 10 s
        held = True
        while held and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                held = bool(watcher.exists(lock))
            except redis.RedisError:  # not back yet
                continue
        watcher.close()
        assert not held, "the group's lock was left to expire"

        engine.clock.advance(timedelta(seconds=20))
        again = engine.ping(shopper, INSIDE)
        assert again.status_code == 200, again.text
        assert again.json()["events"] == []  # still inside: the presence written late was read
        assert engine.count(Ping) == 3
        assert engine.count(FenceEvent) == 1 and engine.count(Coupon) == 1
    finally:
        durable.close()
