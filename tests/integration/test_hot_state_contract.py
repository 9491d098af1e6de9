"""One contract for ``core.state.HotState``: ``InProcessHotState`` and ``RedisHotState``.

Every test here takes the ``hot`` fixture and so runs twice. Expiry is observed without sleeping
on the in-process store (a fake monotonic clock is moved); on Redis the TTLs are tiny and the test
polls until the value is gone, with a generous deadline, so nothing depends on wall-clock luck.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import redis

from core.state import (
    GroupClose,
    HotState,
    HotStateUnavailable,
    InProcessHotState,
    RedisHotState,
)
from tests.private_servers import PrivateRedisCluster

LONG_TTL_S = 60  # far longer than any test runs: "still there" checks use this
POLL_S = 0.01
REDIS_GRACE_S = 5.0  # deadline beyond the TTL when polling Redis for an expiry


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Subject:
    """A hot-state store under test, with a way to let time pass that suits it."""

    name: str
    state: HotState
    fake_time: FakeMonotonic | None

    def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` pass (used only to show that something did NOT expire)."""
        if self.fake_time is not None:
            self.fake_time.now += seconds
        else:
            time.sleep(seconds)

    def eventually(self, condition: Callable[[], bool], after_s: float, what: str) -> None:
        """``condition`` holds once ``after_s`` seconds have passed."""
        if self.fake_time is not None:
            self.fake_time.now += after_s
            assert condition(), f"{self.name}: {what} not true {after_s} s later"
            return
        deadline = time.monotonic() + after_s + REDIS_GRACE_S
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: {what} not true within {after_s + REDIS_GRACE_S} s")
            time.sleep(POLL_S)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateRedisCluster]:
    """A private 3-master Redis Cluster: the contract must hold when keys spread over slots."""
    cluster = PrivateRedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=["inprocess", "redis", "redis-cluster"])
def hot(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "inprocess":
        fake = FakeMonotonic()
        state = InProcessHotState(monotonic=fake)
        yield Subject("inprocess", state, fake)
        state.close()
        return
    if request.param == "redis-cluster":
        cluster: PrivateRedisCluster = request.getfixturevalue("redis_cluster")
        cluster_state = RedisHotState(
            cluster.url, prefix=f"test:{secrets.token_hex(6)}:", cluster=True
        )
        try:
            yield Subject("redis-cluster", cluster_state, None)
        finally:
            cluster_state.close()  # the private cluster goes away with its data
        return
    url: str = request.getfixturevalue("redis_available")
    prefix = f"test:{secrets.token_hex(6)}:"
    redis_state = RedisHotState(url, prefix=prefix)
    try:
        yield Subject("redis", redis_state, None)
    finally:
        redis_state.close()
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


# --- presence -------------------------------------------------------------------------------


def test_presence_of_many_devices_round_trips_and_absent_devices_are_left_out(hot: Subject) -> None:
    records = {
        f"dev-{i}": {
            "inside": {f"fence-{i}": "2026-11-23T09:00:00+00:00"},
            "last_fix_at": "2026-11-23T09:00:00+00:00",
            "n": i,
        }
        for i in range(300)
    }
    hot.state.store_presence(records, ttl_s=LONG_TTL_S)

    wanted = [*records, "never-seen-1", "never-seen-2"]
    loaded = hot.state.load_presence(wanted)

    assert loaded == records
    assert "never-seen-1" not in loaded


def test_load_presence_accepts_any_iterable_and_a_subset(hot: Subject) -> None:
    hot.state.store_presence({"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}}, ttl_s=LONG_TTL_S)

    assert hot.state.load_presence(d for d in ("c", "a")) == {"a": {"x": 1}, "c": {"x": 3}}


def test_presence_with_empty_input_is_a_no_op(hot: Subject) -> None:
    hot.state.store_presence({}, ttl_s=LONG_TTL_S)

    assert hot.state.load_presence([]) == {}
    assert hot.state.load_presence(["nobody"]) == {}


def test_storing_presence_again_replaces_the_record(hot: Subject) -> None:
    hot.state.store_presence({"a": {"inside": {"f1": "t1"}}}, ttl_s=LONG_TTL_S)
    hot.state.store_presence({"a": {"inside": {}}}, ttl_s=LONG_TTL_S)

    assert hot.state.load_presence(["a"]) == {"a": {"inside": {}}}


def test_forgetting_presence_drops_only_those_devices(hot: Subject) -> None:
    hot.state.store_presence({"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}}, ttl_s=LONG_TTL_S)

    hot.state.forget_presence(["a", "c", "never-seen"])
    hot.state.forget_presence([])

    assert hot.state.load_presence(["a", "b", "c"]) == {"b": {"x": 2}}


def test_presence_expires_after_its_ttl(hot: Subject) -> None:
    hot.state.store_presence({"short": {"v": 1}}, ttl_s=1)
    hot.state.store_presence({"long": {"v": 2}}, ttl_s=LONG_TTL_S)
    assert hot.state.load_presence(["short"]) == {"short": {"v": 1}}

    hot.eventually(lambda: hot.state.load_presence(["short"]) == {}, 1, "presence expired")
    assert hot.state.load_presence(["long"]) == {"long": {"v": 2}}


# --- counters -------------------------------------------------------------------------------


def test_counter_of_a_missing_key_is_zero(hot: Subject) -> None:
    assert hot.state.counter("cap:nobody") == 0


def test_incr_creates_the_counter_and_increments_keep_adding(hot: Subject) -> None:
    assert hot.state.incr("c", ttl_s=LONG_TTL_S) == 1
    assert hot.state.incr("c", ttl_s=LONG_TTL_S) == 2
    assert hot.state.incr("c", ttl_s=LONG_TTL_S, amount=5) == 7
    assert hot.state.counter("c") == 7
    assert hot.state.counter("other") == 0


def test_incr_with_an_amount_starts_at_that_amount(hot: Subject) -> None:
    assert hot.state.incr("c", ttl_s=LONG_TTL_S, amount=3) == 3
    assert hot.state.counter("c") == 3


def test_counter_expires_with_the_ttl_set_at_creation(hot: Subject) -> None:
    assert hot.state.incr("c", ttl_s=1) == 1
    # A later increment with a long TTL must not push the expiry out.
    assert hot.state.incr("c", ttl_s=LONG_TTL_S) == 2

    hot.eventually(lambda: hot.state.counter("c") == 0, 1, "counter expired")
    assert hot.state.incr("c", ttl_s=LONG_TTL_S) == 1, "an expired counter starts again"


def test_incr_many_adds_one_to_each_counter_and_returns_the_new_values(hot: Subject) -> None:
    hot.state.incr("rl:{ip:1.2.3.4}:pings:1", ttl_s=LONG_TTL_S, amount=4)
    keys = ["rl:{ip:1.2.3.4}:pings:1", "rl:{device:d-1}:pings:1"]
    assert hot.state.incr_many(keys, ttl_s=LONG_TTL_S) == [5, 1]
    assert hot.state.incr_many(keys, ttl_s=LONG_TTL_S) == [6, 2]
    assert hot.state.incr_many([], ttl_s=LONG_TTL_S) == []
    assert hot.state.counter("rl:{device:d-1}:pings:1") == 2


def test_incr_many_counters_expire_with_their_ttl(hot: Subject) -> None:
    assert hot.state.incr_many(["w"], ttl_s=1) == [1]
    hot.eventually(lambda: hot.state.counter("w") == 0, 1, "window counter expired")
    assert hot.state.incr_many(["w"], ttl_s=LONG_TTL_S) == [1]


def test_incr_within_stops_at_the_limit_and_leaves_the_counter_unchanged(hot: Subject) -> None:
    results = [hot.state.incr_within("cap", limit=3, ttl_s=LONG_TTL_S) for _ in range(5)]

    assert results == [True, True, True, False, False]
    assert hot.state.counter("cap") == 3


def test_incr_within_refuses_a_counter_already_above_the_limit(hot: Subject) -> None:
    hot.state.incr("cap", ttl_s=LONG_TTL_S, amount=7)

    assert hot.state.incr_within("cap", limit=5, ttl_s=LONG_TTL_S) is False
    assert hot.state.counter("cap") == 7


def test_incr_within_with_limit_zero_never_counts(hot: Subject) -> None:
    assert hot.state.incr_within("cap", limit=0, ttl_s=LONG_TTL_S) is False
    assert hot.state.counter("cap") == 0
    # A later call with a real limit starts from zero.
    assert hot.state.incr_within("cap", limit=1, ttl_s=LONG_TTL_S) is True
    assert hot.state.counter("cap") == 1


def test_incr_within_counter_expires_and_the_cap_opens_again(hot: Subject) -> None:
    assert hot.state.incr_within("cap", limit=2, ttl_s=1) is True
    assert hot.state.incr_within("cap", limit=2, ttl_s=LONG_TTL_S) is True  # must not extend
    assert hot.state.incr_within("cap", limit=2, ttl_s=1) is False

    hot.eventually(lambda: hot.state.counter("cap") == 0, 1, "cap counter expired")
    assert hot.state.incr_within("cap", limit=2, ttl_s=LONG_TTL_S) is True
    assert hot.state.counter("cap") == 1


def test_an_absent_counter_starts_from_its_seed_which_is_read_only_then(hot: Subject) -> None:
    """A cap whose counter the hot state lost counts again from the durable record."""
    asked: list[str] = []

    def seed(count: int) -> Callable[[], int]:
        return lambda: asked.append("seed") or count

    assert hot.state.incr_within("lost", limit=3, ttl_s=LONG_TTL_S, seed=seed(2)) is True
    assert hot.state.incr_within("lost", limit=3, ttl_s=LONG_TTL_S, seed=seed(0)) is False
    assert hot.state.incr_within("full", limit=3, ttl_s=LONG_TTL_S, seed=seed(3)) is False
    assert hot.state.incr_within("full", limit=3, ttl_s=LONG_TTL_S, seed=seed(0)) is False

    assert asked == ["seed", "seed"]  # once per absent counter: a present one is not recounted
    assert (hot.state.counter("lost"), hot.state.counter("full")) == (3, 3)


def test_incr_within_under_contention_admits_exactly_the_limit(hot: Subject) -> None:
    threads = 50
    barrier = threading.Barrier(threads)

    def attempt(_: int) -> bool:
        barrier.wait()
        return hot.state.incr_within("contended", limit=10, ttl_s=LONG_TTL_S)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(attempt, range(threads)))

    assert results.count(True) == 10
    assert hot.state.counter("contended") == 10


# --- spacing (cooldowns) -----------------------------------------------------------------------


def test_claim_spacing_admits_the_first_and_refuses_within_the_gap(hot: Subject) -> None:
    assert hot.state.claim_spacing("{s}:cool", 1_000.0, gap_s=600, ttl_s=LONG_TTL_S)
    assert not hot.state.claim_spacing("{s}:cool", 1_599.5, gap_s=600, ttl_s=LONG_TTL_S)
    assert hot.state.claim_spacing("{s}:cool", 1_600.0, gap_s=600, ttl_s=LONG_TTL_S)
    # the gap now counts from the second claim
    assert not hot.state.claim_spacing("{s}:cool", 2_000.0, gap_s=600, ttl_s=LONG_TTL_S)


def test_release_spacing_undoes_only_the_matching_claim(hot: Subject) -> None:
    assert hot.state.claim_spacing("{s}:cool", 1_000.0, gap_s=600, ttl_s=LONG_TTL_S)
    hot.state.release_spacing("{s}:cool", 999.0)  # not the recorded stamp: nothing happens
    assert not hot.state.claim_spacing("{s}:cool", 1_001.0, gap_s=600, ttl_s=LONG_TTL_S)
    hot.state.release_spacing("{s}:cool", 1_000.0)
    assert hot.state.claim_spacing("{s}:cool", 1_001.0, gap_s=600, ttl_s=LONG_TTL_S)


def test_claim_spacing_under_contention_admits_exactly_one(hot: Subject) -> None:
    threads = 40
    barrier = threading.Barrier(threads)

    def attempt(i: int) -> bool:
        barrier.wait()
        return hot.state.claim_spacing("{s}:race", 5_000.0 + i / 1000, gap_s=60, ttl_s=LONG_TTL_S)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(attempt, range(threads)))

    assert results.count(True) == 1


# --- locks ----------------------------------------------------------------------------------


def test_a_lock_is_exclusive(hot: Subject) -> None:
    assert hot.state.acquire_lock("job", "a", LONG_TTL_S) is True
    assert hot.state.acquire_lock("job", "b", LONG_TTL_S) is False
    assert hot.state.acquire_lock("job", "a", LONG_TTL_S) is False, "locks are not re-entrant"
    assert hot.state.acquire_lock("other-job", "b", LONG_TTL_S) is True


def test_only_the_owner_can_release_a_lock(hot: Subject) -> None:
    hot.state.acquire_lock("job", "a", LONG_TTL_S)

    assert hot.state.release_lock("job", "b") is False
    assert hot.state.acquire_lock("job", "b", LONG_TTL_S) is False, "still held by a"
    assert hot.state.release_lock("job", "a") is True
    assert hot.state.release_lock("job", "a") is False, "already released"
    assert hot.state.acquire_lock("job", "b", LONG_TTL_S) is True


def test_releasing_a_lock_nobody_holds_is_refused(hot: Subject) -> None:
    assert hot.state.release_lock("nothing", "a") is False
    assert hot.state.extend_lock("nothing", "a", LONG_TTL_S) is False


def test_only_the_owner_can_extend_a_lock(hot: Subject) -> None:
    hot.state.acquire_lock("job", "a", LONG_TTL_S)

    assert hot.state.extend_lock("job", "b", 0.05) is False
    hot.pass_time(0.2)
    assert hot.state.acquire_lock("job", "b", LONG_TTL_S) is False, "b's extend changed nothing"
    assert hot.state.extend_lock("job", "a", LONG_TTL_S) is True


def test_extending_a_lock_sets_its_new_expiry(hot: Subject) -> None:
    hot.state.acquire_lock("job", "a", LONG_TTL_S)

    assert hot.state.extend_lock("job", "a", 0.05) is True

    hot.eventually(
        lambda: hot.state.acquire_lock("job", "b", LONG_TTL_S),
        0.05,
        "lock free after the shortened expiry",
    )


def test_an_expired_lock_can_be_taken_by_another_owner(hot: Subject) -> None:
    assert hot.state.acquire_lock("job", "a", 0.05) is True

    hot.eventually(
        lambda: hot.state.acquire_lock("job", "b", LONG_TTL_S), 0.05, "expired lock taken by b"
    )
    assert hot.state.release_lock("job", "a") is False, "a no longer owns it"
    assert hot.state.extend_lock("job", "a", LONG_TTL_S) is False
    assert hot.state.release_lock("job", "b") is True


def test_many_locks_are_taken_each_on_its_own_in_one_call(hot: Subject) -> None:
    assert hot.state.acquire_lock("device:2", "b", LONG_TTL_S) is True
    names = [f"device:{i}" for i in range(5)]

    assert hot.state.acquire_locks(names, "a", LONG_TTL_S) == [True, True, False, True, True]
    assert hot.state.acquire_locks(names, "c", LONG_TTL_S) == [False] * 5
    assert hot.state.acquire_locks([], "a", LONG_TTL_S) == []


def test_releasing_many_locks_frees_only_the_owners(hot: Subject) -> None:
    hot.state.acquire_locks(["device:1", "device:2"], "a", LONG_TTL_S)
    hot.state.acquire_lock("device:3", "b", LONG_TTL_S)

    hot.state.release_locks(["device:1", "device:2", "device:3", "device:4"], "a")
    hot.state.release_locks([], "a")

    assert hot.state.acquire_locks(["device:1", "device:2", "device:3"], "c", LONG_TTL_S) == [
        True,
        True,
        False,
    ]
    assert hot.state.release_lock("device:3", "b") is True


def test_many_locks_expire_with_their_ttl(hot: Subject) -> None:
    names = ["device:1", "device:2"]
    hot.state.acquire_locks(names, "a", 0.05)
    taken: set[str] = set()

    def both_taken() -> bool:
        oks = hot.state.acquire_locks(names, "b", LONG_TTL_S)
        taken.update(name for name, ok in zip(names, oks, strict=True) if ok)
        return taken == set(names)

    hot.eventually(both_taken, 0.05, "both expired locks taken by b")


# --- a ping group's opening and close ----------------------------------------------------------


def test_opening_a_group_takes_free_locks_and_reads_values_and_presence(hot: Subject) -> None:
    hot.state.acquire_lock("device:2", "b", LONG_TTL_S)
    hot.state.store_presence({"d1": {"inside": ["f1"]}, "d2": {"inside": []}}, LONG_TTL_S)
    hot.state.set("view:s1", "cached", LONG_TTL_S)
    hot.state.incr("gen:s1", LONG_TTL_S)
    hot.state.incr("gen:s2", LONG_TTL_S, amount=4)

    opening = hot.state.open_group(
        ["device:1", "device:2"],
        "a",
        LONG_TTL_S,
        [("view:s1", "gen:s1"), ("view:s2", "gen:s2"), ("view:s3", "gen:s3")],
        ["d1", "d2", "d3"],
    )

    assert opening.held == [True, False]
    assert opening.versioned == [("cached", 1), (None, 4), (None, 0)]
    assert opening.presence == {"d1": {"inside": ["f1"]}, "d2": {"inside": []}}
    assert hot.state.acquire_lock("device:1", "c", LONG_TTL_S) is False, "a holds it now"
    empty = hot.state.open_group([], "a", LONG_TTL_S, [], [])
    assert (empty.held, empty.versioned, empty.presence) == ([], [], {})


def test_opening_a_group_counts_its_counters_with_the_locks_and_reads(hot: Subject) -> None:
    """The group's rate-limit counters go up in the same opening (a lock another holds does
    not stop its request from being counted); a new counter expires with the given TTL."""
    hot.state.acquire_lock("device:2", "b", LONG_TTL_S)
    hot.state.incr("rl:{ip:1.2.3.4}:pings:1", ttl_s=LONG_TTL_S, amount=4)
    hot.state.store_presence({"d1": {"inside": ["f1"]}}, LONG_TTL_S)
    counters = ["rl:{ip:1.2.3.4}:pings:1", "rl:{device:d-1}:pings:1", "rl:{device:d-2}:pings:1"]

    opening = hot.state.open_group(
        ["device:1", "device:2"], "a", LONG_TTL_S, [], ["d1"], counters, 1
    )

    assert opening.held == [True, False]
    assert opening.counts == [5, 1, 1]
    assert opening.presence == {"d1": {"inside": ["f1"]}}
    again = hot.state.open_group([], "c", LONG_TTL_S, [], [], counters[1:], LONG_TTL_S)
    assert again.counts == [2, 2]
    hot.eventually(
        lambda: hot.state.counter("rl:{device:d-1}:pings:1") == 0, 3, "new counter expired"
    )
    assert hot.state.counter("rl:{ip:1.2.3.4}:pings:1") == 5, "an old counter keeps its expiry"
    assert hot.state.open_group(["device:3"], "a", LONG_TTL_S, [], []).counts == []


def test_closing_a_group_stores_presence_and_releases_only_the_owners_locks(
    hot: Subject,
) -> None:
    hot.state.open_group(["device:d1", "device:d2"], "a", LONG_TTL_S, [], [])
    hot.state.acquire_lock("device:d3", "b", LONG_TTL_S)

    hot.state.close_group(
        ["device:d1", "device:d2", "device:d3"], "a", {"d1": {"n": 1}, "d2": {"n": 2}}, LONG_TTL_S
    )

    assert hot.state.load_presence(["d1", "d2"]) == {"d1": {"n": 1}, "d2": {"n": 2}}
    assert hot.state.acquire_locks(["device:d1", "device:d2", "device:d3"], "c", LONG_TTL_S) == [
        True,
        True,
        False,
    ]
    hot.state.close_group(["device:d1"], "c", {}, LONG_TTL_S)  # locks only
    assert hot.state.acquire_lock("device:d1", "d", LONG_TTL_S) is True
    with pytest.raises(ValueError, match="without its device's lock"):
        hot.state.close_group([], "c", {"d1": {"n": 3}}, LONG_TTL_S)


def test_opening_a_group_first_writes_the_end_of_the_one_before(hot: Subject) -> None:
    """An earlier group's end carried into an opening (``closing``) is written first: its
    presence records where its owner still holds the lock, its owner's locks freed. A device in
    both groups is then locked again by the new owner, and its record read back is the one
    just written; a lock another owner took meanwhile keeps that owner's record."""
    hot.state.open_group(["device:d1", "device:d2", "device:d3"], "a", LONG_TTL_S, [], [])
    hot.state.release_lock("device:d3", "a")
    assert hot.state.acquire_lock("device:d3", "b", LONG_TTL_S)
    hot.state.store_presence({"d3": {"n": "b's"}}, LONG_TTL_S)
    end = GroupClose(
        ["device:d1", "device:d2", "device:d3"],
        "a",
        {"d1": {"n": 1}, "d2": {"n": 2}, "d3": {"n": "a's"}},
        LONG_TTL_S,
        time.monotonic() + LONG_TTL_S,
    )

    opening = hot.state.open_group(
        ["device:d1", "device:d4"], "c", LONG_TTL_S, [], ["d1", "d3"], closing=end
    )

    assert opening.held == [True, True], "a's lock on d1 was freed before c asked for it"
    assert opening.presence == {"d1": {"n": 1}, "d3": {"n": "b's"}}
    assert hot.state.load_presence(["d2"]) == {"d2": {"n": 2}}
    assert hot.state.acquire_locks(["device:d1", "device:d2", "device:d3"], "e", 1) == [
        False,  # c's now
        True,  # a's, freed
        False,  # still b's
    ]
    bare = GroupClose(["device:d4"], "c", {}, LONG_TTL_S, time.monotonic() + LONG_TTL_S)
    assert hot.state.open_group([], "f", LONG_TTL_S, [], [], closing=bare).held == []
    assert hot.state.acquire_lock("device:d4", "g", LONG_TTL_S), "an end with no records"


def test_a_late_close_writes_no_presence_over_the_next_owner(
    hot: Subject, caplog: pytest.LogCaptureFixture
) -> None:
    """A group's close that lands after its lock expired (the hot state was away) leaves the
    presence alone: another owner may have taken the device since, and written newer."""
    hot.state.open_group(["device:d1", "device:d2"], "late", 0.05, [], [])
    hot.eventually(lambda: hot.state.acquire_lock("device:d1", "next", LONG_TTL_S), 1, "expiry")
    hot.state.close_group(["device:d1"], "next", {"d1": {"n": "newer"}}, LONG_TTL_S)

    hot.state.close_group(
        ["device:d1", "device:d2"], "late", {"d1": {"n": "older"}, "d2": {"n": "older"}}, 60
    )

    assert hot.state.load_presence(["d1", "d2"]) == {"d1": {"n": "newer"}}
    assert "presence of 2 devices not written" in caplog.text


def test_presence_stored_by_closing_a_group_expires_with_its_ttl(hot: Subject) -> None:
    hot.state.open_group(["device:d1", "device:d2"], "a", LONG_TTL_S, [], [])
    hot.state.close_group(["device:d1", "device:d2"], "a", {"d1": {"n": 1}}, 1)
    assert hot.state.load_presence(["d1"]) == {"d1": {"n": 1}}
    hot.state.store_presence({"d2": {"n": 2}}, LONG_TTL_S)

    hot.eventually(lambda: hot.state.load_presence(["d1"]) == {}, 1, "presence expired")
    assert hot.state.load_presence(["d2"]) == {"d2": {"n": 2}}


# --- cached values --------------------------------------------------------------------------


def test_get_of_a_missing_key_is_none(hot: Subject) -> None:
    assert hot.state.get("missing") is None


def test_set_without_ttl_keeps_the_value_and_overwrites(hot: Subject) -> None:
    hot.state.set("k", "one")
    assert hot.state.get("k") == "one"
    hot.state.set("k", "two")
    assert hot.state.get("k") == "two"


def test_set_with_ttl_expires(hot: Subject) -> None:
    hot.state.set("short", "v", ttl_s=0.05)
    hot.state.set("long", "w", ttl_s=LONG_TTL_S)

    hot.eventually(lambda: hot.state.get("short") is None, 0.05, "cached value expired")
    assert hot.state.get("long") == "w"


def test_a_plain_set_removes_an_earlier_ttl(hot: Subject) -> None:
    hot.state.set("k", "v1", ttl_s=0.05)
    hot.state.set("k", "v2")

    hot.pass_time(0.2)
    assert hot.state.get("k") == "v2"


def test_delete_removes_many_keys_and_ignores_missing_ones(hot: Subject) -> None:
    hot.state.set("a", "1")
    hot.state.set("b", "2")
    hot.state.set("c", "3")

    hot.state.delete("a", "b", "never-set")
    hot.state.delete()

    assert hot.state.get("a") is None
    assert hot.state.get("b") is None
    assert hot.state.get("c") == "3"


def test_cached_values_counters_and_locks_of_one_name_are_separate(hot: Subject) -> None:
    hot.state.set("x", "cached")
    hot.state.incr("x", ttl_s=LONG_TTL_S, amount=4)
    hot.state.acquire_lock("x", "owner", LONG_TTL_S)
    hot.state.store_presence({"x": {"p": 1}}, ttl_s=LONG_TTL_S)

    hot.state.delete("x")

    assert hot.state.get("x") is None
    assert hot.state.counter("x") == 4
    assert hot.state.acquire_lock("x", "other", LONG_TTL_S) is False
    assert hot.state.load_presence(["x"]) == {"x": {"p": 1}}


def test_shared_flag_says_whether_other_processes_see_the_state(hot: Subject) -> None:
    assert hot.state.shared is (hot.name != "inprocess")
    hot.state.ping()


# --- in-process store: exact expiry boundaries (fake clock) ---------------------------------


def test_in_process_values_live_until_just_before_the_deadline() -> None:
    fake = FakeMonotonic()
    state = InProcessHotState(monotonic=fake)
    state.set("k", "v", ttl_s=10)
    state.incr("c", ttl_s=10)
    state.acquire_lock("job", "a", 10)

    fake.now += 9.999
    assert state.get("k") == "v"
    assert state.counter("c") == 1
    assert state.acquire_lock("job", "b", 10) is False

    fake.now += 0.001  # exactly at the deadline: gone
    assert state.get("k") is None
    assert state.counter("c") == 0
    assert state.acquire_lock("job", "b", 10) is True


# --- unreachable Redis ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda s: s.ping(), id="ping"),
        pytest.param(lambda s: s.load_presence(["a", "b"]), id="load_presence"),
        pytest.param(lambda s: s.store_presence({"a": {}}, 60), id="store_presence"),
        pytest.param(lambda s: s.incr("c", 60), id="incr"),
        pytest.param(lambda s: s.incr_within("c", 3, 60), id="incr_within"),
        pytest.param(lambda s: s.acquire_lock("job", "a", 1.0), id="acquire_lock"),
        pytest.param(lambda s: s.get("k"), id="get"),
    ],
)
def test_unreachable_redis_raises_hot_state_unavailable(
    operation: Callable[[RedisHotState], object],
) -> None:
    state = RedisHotState("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        with pytest.raises(HotStateUnavailable, match="unreachable") as caught:
            operation(state)
        assert isinstance(caught.value.__cause__, redis.RedisError)
    finally:
        state.close()


def test_many_keys_in_one_script_survive_a_flushed_script_cache(redis_available: str) -> None:
    """Counters, lock releases and a group's close over many keys are one script call each;
    after Redis has forgotten its scripts (a restart, SCRIPT FLUSH) they are loaded again."""
    prefix = f"test:{secrets.token_hex(6)}:"
    state = RedisHotState(redis_available, prefix=prefix)
    client = redis.Redis.from_url(redis_available)
    try:
        assert state.incr_many(["a", "b"], ttl_s=LONG_TTL_S) == [1, 1]
        assert state.acquire_locks(["x", "y"], "me", LONG_TTL_S) == [True, True]
        client.script_flush()

        assert state.incr_many(["a", "b", "c"], ttl_s=LONG_TTL_S) == [2, 2, 1]
        state.release_locks(["x", "y"], "me")
        assert state.open_group(["device:d"], "me", LONG_TTL_S, [], []).held == [True]
        client.script_flush()
        state.close_group(["device:d"], "me", {"d": {"n": 1}}, LONG_TTL_S)

        assert state.acquire_locks(["x", "y", "device:d"], "other", LONG_TTL_S) == [
            True,
            True,
            True,
        ]
        assert state.load_presence(["d"]) == {"d": {"n": 1}}
        assert 0 < int(client.ttl(f"{prefix}c")) <= LONG_TTL_S
    finally:
        state.close()
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
