"""One active scheduler among several processes: a lease in SQL with takeover and fencing.

Each runtime here is one engine process on the same database (SQLite file or PostgreSQL schema).
Heartbeats are driven by hand (``tick``) with a moved clock, so nothing waits on wall time.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from core.db import transaction
from offers.lease import LeaderLease
from offers.models import Delivery, SchedulerLease
from offers.repository import DeliveryRepository
from tests.api.conftest import INSIDE, Engine, EngineFactory
from tests.conftest import Stack

TTL = timedelta(seconds=120)
# Real heartbeats far apart: the test moves the clock and calls tick() itself.
SLOW = {"scheduler_lease_ttl_s": 120.0, "scheduler_heartbeat_s": 60.0}


def _two(make_engine_api: EngineFactory) -> tuple[Engine, Engine]:
    first = make_engine_api(**SLOW)
    second = make_engine_api(publish=False, **SLOW)
    return first, second


def _deliveries(engine: Engine) -> list[Delivery]:
    with engine.runtime.sessions() as session:
        return list(session.scalars(select(Delivery)))


def test_only_one_of_two_processes_leads(make_engine_api: EngineFactory) -> None:
    first, second = _two(make_engine_api)
    assert first.runtime.scheduler.leading and not second.runtime.scheduler.leading
    assert second.runtime.scheduler.tick() is False  # stand-by keeps trying, does not win
    assert first.runtime.scheduler.tick() is True  # the leader renews
    with first.runtime.sessions() as session:
        [lease] = session.scalars(select(SchedulerLease)).all()
    assert lease.holder == first.runtime.scheduler.lease.holder and lease.token == 1


def test_stand_by_takes_over_when_the_leader_stops_renewing(
    make_engine_api: EngineFactory,
) -> None:
    first, second = _two(make_engine_api)
    old_token = first.runtime.scheduler.lease.valid_token()
    assert old_token == 1
    # The leader dies silently (no release): nothing renews; just short of the TTL, no takeover.
    first.clock.advance(TTL - timedelta(seconds=1))
    assert second.runtime.scheduler.tick() is False
    first.clock.advance(timedelta(seconds=2))
    assert second.runtime.scheduler.tick() is True
    assert second.runtime.scheduler.leading
    assert second.runtime.scheduler.lease.valid_token() == 2
    # The old leader, waking up, finds it lost the lease and stops acting.
    assert first.runtime.scheduler.tick() is False
    assert not first.runtime.scheduler.leading


def test_a_deposed_leader_can_no_longer_claim_and_the_new_one_takes_its_claim(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(run_scheduler=False)  # the outbox row; leases driven by hand
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    engine.ping(engine.shopper(), INSIDE)
    [delivery] = _deliveries(engine)
    sessions, clock = engine.runtime.sessions, engine.clock
    old = LeaderLease(sessions, clock, "process-a", ttl=TTL)
    new = LeaderLease(sessions, clock, "process-b", ttl=TTL)
    assert old.try_acquire() is not None and new.try_acquire() is None

    def claim(token: int) -> bool:
        now = clock.now()
        with transaction(sessions) as session:
            return DeliveryRepository(session).claim(delivery.id, now, now + TTL, token)

    assert claim(1)  # process a claims, starts sending, then hangs or dies
    clock.advance(TTL + timedelta(seconds=1))
    taken = new.try_acquire()
    assert taken is not None and taken.token == 2
    assert claim(1) is False  # a's token no longer holds the lease: fenced off
    assert claim(2) is True  # b takes over a's claim at once, without waiting for it to lapse
    assert claim(2) is False  # and nobody else can while b's claim stands
    assert old.try_acquire() is None and old.valid_token() is None


def test_a_claim_left_by_a_dead_leader_is_sent_by_the_next_with_the_same_key(
    make_engine_api: EngineFactory,
) -> None:
    first = make_engine_api(run_scheduler=False)
    store = first.create_store()
    first.create_campaign([store["id"]])
    first.ping(first.shopper(), INSIDE)
    [delivery] = _deliveries(first)
    now = first.clock.now()
    with transaction(first.runtime.sessions) as session:  # claimed, then the process was killed
        assert DeliveryRepository(session).claim(delivery.id, now, now + TTL)
    leader = make_engine_api(publish=False, **SLOW)  # token 1 > no token: the claim is stale
    report = leader.next_report()
    assert report.status == "sent" and report.delivery_id == delivery.id
    [mail] = leader.inbox.wait_for(1)
    assert mail["X-Offer-Engine-Idempotency-Key"] == f"{delivery.coupon_id}:email"
    [after] = _deliveries(leader)
    assert after.status == "sent" and after.attempts == 2 and after.claim_token == 1


def test_deliveries_written_by_a_non_leader_are_sent_by_the_leader(
    make_engine_api: EngineFactory,
) -> None:
    first, second = _two(make_engine_api)
    store = second.create_store()
    second.create_campaign([store["id"]])
    second.ping(second.shopper(), INSIDE)  # the API call lands on the stand-by process
    [delivery] = _deliveries(second)
    assert second.runtime.scheduler.queued == 0  # the stand-by queues nothing
    assert first.runtime.scheduler.sweep() == 1  # the leader's sweep finds the row
    report = first.next_report()
    assert report.status == "sent" and report.delivery_id == delivery.id


def test_a_claim_skips_deliveries_another_transaction_holds_instead_of_waiting(
    make_engine_api: EngineFactory, stack: Stack
) -> None:
    """Claims lock rows in id order and skip locked ones: a batch that shares deliveries with one
    being claimed or swept elsewhere takes the rest at once, so claimers can never deadlock."""
    if stack.name != "postgres-redis":
        pytest.skip("SQLite serialises writers: a second writer waits for the database lock")
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    for n in range(2):
        engine.ping(engine.shopper(email=f"s{n}@example.com", customer=f"c-{n}"), INSIDE)
    held, free = sorted(d.id for d in _deliveries(engine))
    sessions, clock = engine.runtime.sessions, engine.clock
    now = clock.now()
    with transaction(sessions) as other:  # another claimer holds one row, uncommitted
        other.execute(select(Delivery).where(Delivery.id == held).with_for_update())
        with transaction(sessions) as session:
            session.execute(text("SET LOCAL lock_timeout = '2s'"))  # waiting would fail here
            taken = DeliveryRepository(session).claim_many([free, held], now, now + TTL)
        assert taken == [free]
    with transaction(sessions) as session:  # once released, the held one is claimable
        assert DeliveryRepository(session).claim_many([free, held], now, now + TTL) == [held]
