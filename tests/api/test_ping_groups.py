"""Group commit of ping requests (``api.ping_groups``), on both stacks: requests that arrive
together share one transaction, yet each gets its own answer, its own refusal and its own
rate-limit count, and a device's requests never run side by side."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from api.auth import read_device_token
from api.ping_groups import PingGroups
from consent.domain import ConsentRequired
from consent.models import ConsentReceipt
from core.errors import RateLimited, Unauthenticated
from core.ratelimit import RateLimiter, RateLimits, RouteLimits, Subjects
from core.state import GroupClose, HotStateUnavailable, device_lock
from geo.domain import Fix
from geo.models import FenceEvent, Ping
from offers.flows import DeviceBusy, IngestResult, PingBatch
from tests.api.conftest import INSIDE, OUTSIDE, Engine, EngineFactory


def _batch(
    engine: Engine, device: dict[str, Any], point: tuple[float, float], s: int = 0
) -> PingBatch:
    claims = read_device_token(engine.runtime.settings, device["token"], engine.clock.now())
    at = engine.clock.now() + timedelta(seconds=s)
    fix = Fix(claims.device_id, point[0], point[1], at, 10.0, None, None, False, None)
    return PingBatch(claims.device_id, claims.token_version, [fix])


def _subjects(batch: PingBatch) -> Subjects:
    return Subjects(device_id=batch.device_id, ip="127.0.0.1")


def _groups(engine: Engine, limits: RateLimits | None = None, **kwargs: Any) -> PingGroups:
    runtime = engine.runtime
    limiter = RateLimiter(
        runtime.state, runtime.clock, limits or RateLimits(pings=RouteLimits()), 60
    )
    kwargs.setdefault("close", runtime.ingestor.close)  # as the app builds them
    return PingGroups(runtime.ingestor.ingest_many, limiter, **kwargs)


async def _submit_all(
    groups: PingGroups, batches: Sequence[PingBatch]
) -> list[IngestResult | BaseException]:
    answers = asyncio.gather(
        *(groups.submit(b, _subjects(b)) for b in batches), return_exceptions=True
    )
    return await asyncio.wait_for(answers, 60)  # a request left waiting fails, not hangs


def _shoppers(engine: Engine, count: int) -> list[dict[str, Any]]:
    engine.create_store()
    return [
        engine.shopper(offers_by_email=False, email=f"s{n}@example.com", customer=f"c-{n}")
        for n in range(count)
    ]


def test_requests_arriving_together_share_a_transaction(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api()
    shoppers = _shoppers(engine, 6)
    groups = _groups(engine)
    batches = [_batch(engine, s, INSIDE) for s in shoppers]
    results = asyncio.run(_submit_all(groups, batches))
    assert all(isinstance(r, IngestResult) for r in results), results
    # The first request found the engine idle and went alone; the five that came while it
    # ran went together.
    assert (groups.groups, groups.grouped) == (2, 6)
    for batch, result in zip(batches, results, strict=True):
        assert isinstance(result, IngestResult)
        assert result.accepted == 1
        assert [e.kind for e in result.events] == ["enter"]
        assert {e.device_id for e in result.events} == {batch.device_id}, "its own events only"
    assert engine.count(Ping) == 6
    assert engine.count(ConsentReceipt, ConsentReceipt.action == "ping") == 6


def test_each_request_is_refused_on_its_own(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api()
    shoppers = _shoppers(engine, 3)
    no_consent = engine.register(email="n@example.com", customer="c-n")
    groups = _groups(engine)
    first = _batch(engine, shoppers[0], INSIDE)
    stale = _batch(engine, shoppers[1], INSIDE)
    stale = PingBatch(stale.device_id, stale.token_version + 1, stale.fixes)
    refused = _batch(engine, no_consent, INSIDE)
    fine = _batch(engine, shoppers[2], INSIDE)
    results = asyncio.run(_submit_all(groups, [first, stale, refused, fine]))
    assert groups.groups == 2, "the last three went together"
    assert isinstance(results[0], IngestResult) and isinstance(results[3], IngestResult)
    assert isinstance(results[1], Unauthenticated)
    assert isinstance(results[2], ConsentRequired)
    with engine.runtime.sessions() as session:
        receipts = session.scalars(
            select(ConsentReceipt).where(ConsentReceipt.action == "ping")
        ).all()
    by_device = {r.details["device_id"]: r.allowed for r in receipts}
    assert by_device == {first.device_id: True, refused.device_id: False, fine.device_id: True}
    assert engine.count(Ping) == 2, "only the admitted requests' fixes are stored"


def test_a_devices_requests_run_one_after_the_other(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(exit_confirm_fixes=1, exit_buffer_m=0)
    [walker, other] = _shoppers(engine, 2)
    groups = _groups(engine)
    batches = [
        _batch(engine, walker, INSIDE, 0),
        _batch(engine, walker, OUTSIDE, 60),
        _batch(engine, other, INSIDE, 0),
        _batch(engine, walker, INSIDE, 120),
    ]
    results = asyncio.run(_submit_all(groups, batches))
    assert all(isinstance(r, IngestResult) for r in results), results
    # walker's three requests went in three groups, in order; other joined the second
    assert (groups.groups, groups.grouped) == (3, 4)
    kinds = [[e.kind for e in r.events] for r in results if isinstance(r, IngestResult)]
    assert kinds[0] == ["enter"] and kinds[2] == ["enter"] and kinds[3] == ["enter"]
    assert "exit" in kinds[1], "the second request saw the state the first one left"


def _spy_on_group_ends(
    state: Any, monkeypatch: pytest.MonkeyPatch, fail_carrying: bool = False
) -> tuple[list[GroupClose | None], list[str]]:
    """Record what each group's opening carried and the owners of the ends closed on their own;
    with ``fail_carrying``, the first opening that carries an end fails (the hot state away)."""
    carried: list[GroupClose | None] = []
    closed: list[str] = []
    opening_now = threading.local()  # an opening may close through ``close_group`` itself
    open_group, close_group = state.open_group, state.close_group

    def opening(*args: Any, closing: GroupClose | None = None, **kwargs: Any) -> Any:
        if len(args) > 7:
            *args, closing = args
        carried.append(closing)
        if fail_carrying and closing is not None and carried.count(closing) == 1:
            raise HotStateUnavailable("the hot state went away")
        opening_now.on = True
        try:
            return open_group(*args, closing=closing, **kwargs)
        finally:
            opening_now.on = False

    def closing_alone(lock_names: Any, owner: str, *args: Any) -> None:
        if not getattr(opening_now, "on", False):
            closed.append(owner)
        close_group(lock_names, owner, *args)

    monkeypatch.setattr(state, "open_group", opening)
    monkeypatch.setattr(state, "close_group", closing_alone)
    return carried, closed


def test_a_groups_end_is_written_in_the_opening_of_the_group_waiting_for_it(
    make_engine_api: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests waiting as a group commits: its answers do not wait for its end (presence,
    locks); the next group writes that end in its own opening, before it reads. A device's next
    request goes in that group and sees the state its last one left (no second enter)."""
    engine = make_engine_api()
    [walker, *others] = _shoppers(engine, 4)
    state = engine.runtime.state
    carried, closed = _spy_on_group_ends(state, monkeypatch)
    groups = _groups(engine)
    first, again = _batch(engine, walker, INSIDE, 0), _batch(engine, walker, INSIDE, 5)
    batches = [first, *(_batch(engine, s, INSIDE) for s in others), again]

    results = asyncio.run(_submit_all(groups, batches))

    assert all(isinstance(r, IngestResult) for r in results), results
    assert (groups.groups, groups.grouped) == (2, 5)
    kinds = [[e.kind for e in r.events] for r in results if isinstance(r, IngestResult)]
    assert kinds == [["enter"], ["enter"], ["enter"], ["enter"], []]
    first_end, second_end = carried
    assert first_end is None
    assert second_end is not None and list(second_end.presence) == [first.device_id]
    assert len(closed) == 1 and closed != [second_end.owner], "only the last group closed alone"
    devices = [b.device_id for b in batches[:-1]]
    names = [device_lock(d) for d in devices]
    assert state.acquire_locks(names, "probe", 60) == [True] * 4, "the last group closed itself"
    presence = state.load_presence(devices)
    assert set(presence) == set(devices)
    assert presence[first.device_id]["w"] == again.fixes[0].recorded_at.timestamp()


def test_an_end_whose_carrying_opening_fails_is_written_in_the_background(
    make_engine_api: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opening that was to write an earlier group's end fails (the hot state away for a
    moment): its own request gets the error, and the end is still written, in the background,
    so the earlier group's device is neither left locked nor without its presence."""
    engine = make_engine_api()
    [walker, other] = _shoppers(engine, 2)
    state = engine.runtime.state
    carried, _ = _spy_on_group_ends(state, monkeypatch, fail_carrying=True)
    groups = _groups(engine)
    batches = [_batch(engine, walker, INSIDE), _batch(engine, other, INSIDE)]

    [written, refused] = asyncio.run(_submit_all(groups, batches))

    assert isinstance(written, IngestResult) and [e.kind for e in written.events] == ["enter"]
    assert isinstance(refused, HotStateUnavailable), refused
    assert carried[1] is not None and list(carried[1].presence) == [batches[0].device_id]
    lock = device_lock(batches[0].device_id)
    deadline = time.monotonic() + 5
    while not state.acquire_lock(lock, "probe", 60):
        assert time.monotonic() < deadline, "the end was never written"
        time.sleep(0.02)
    assert batches[0].device_id in state.load_presence([batches[0].device_id])
    assert state.acquire_lock(device_lock(batches[1].device_id), "probe", 60)
    assert engine.count(Ping) == 1, "the failed group stored nothing"


async def _timed(groups: PingGroups, batch: PingBatch) -> tuple[object, float]:
    try:
        result: object = await groups.submit(batch, _subjects(batch))
    except Exception as exc:
        result = exc
    return result, time.monotonic()


async def _submit_timed(
    groups: PingGroups, batches: Sequence[PingBatch]
) -> list[tuple[object, float]]:
    return list(await asyncio.gather(*(_timed(groups, b) for b in batches)))


def _one_device_held_elsewhere(engine: Engine) -> tuple[dict[str, Any], list[PingBatch], str]:
    """Two shoppers' batches; the first one's device lock taken by "another process"."""
    [held, free] = _shoppers(engine, 2)
    batches = [_batch(engine, held, INSIDE), _batch(engine, free, INSIDE)]
    lock = device_lock(batches[0].device_id)
    assert engine.runtime.state.acquire_lock(lock, "other-process", 30)
    return held, batches, lock


def test_a_request_waits_while_another_process_holds_its_device(
    make_engine_api: EngineFactory,
) -> None:
    """Another API process holding a device's lock (its request still running) makes this
    request wait for a later group, not overlap; the device beside it in the group goes on."""
    engine = make_engine_api()
    _, batches, lock = _one_device_held_elsewhere(engine)
    state = engine.runtime.state
    release = threading.Timer(0.3, lambda: state.release_lock(lock, "other-process"))
    started = time.monotonic()
    release.start()
    try:
        [(first, first_at), (second, second_at)] = asyncio.run(
            _submit_timed(_groups(engine), batches)
        )
    finally:
        release.join()
    assert isinstance(first, IngestResult) and isinstance(second, IngestResult)
    assert [e.kind for e in first.events] == [e.kind for e in second.events] == ["enter"]
    assert first_at - started >= 0.3, "the held device waited for its lock"
    assert second_at - started < 0.3, "the free device did not wait with it"
    names = [device_lock(b.device_id) for b in batches]
    assert state.acquire_locks(names, "next", 30) == [True, True], "both released"


def test_a_device_held_too_long_is_refused_with_503_and_nothing_of_it_kept(
    make_engine_api: EngineFactory,
) -> None:
    """While it waits, the request is counted against its rate limits once (a per-device limit
    of 2 is not reached by its many tries), then refused with 503."""
    engine = make_engine_api()
    held, batches, lock = _one_device_held_elsewhere(engine)
    state = engine.runtime.state
    groups = _groups(engine, RateLimits(pings=RouteLimits(per_device=2)), device_wait_s=0.3)

    [(first, _), (second, _)] = asyncio.run(_submit_timed(groups, batches))

    assert isinstance(first, DeviceBusy), first
    assert "still being processed" in str(first)
    assert isinstance(second, IngestResult)
    assert groups.groups >= 4, "the busy request was tried again several times"
    assert engine.count(Ping) == 1, "only the free device's fix is stored"
    app_groups = engine.client.app.state.ping_groups  # type: ignore[attr-defined]
    app_groups.device_wait_s = 0.3
    answer = engine.ping(held, INSIDE)  # over HTTP: a 503 the phone sends again
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "unavailable"
    assert engine.count(Ping) == 1
    assert state.release_lock(lock, "other-process")
    assert engine.ping(held, INSIDE).status_code == 200


def test_rate_limits_count_every_request_of_a_group(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api()
    [walker, other] = _shoppers(engine, 2)
    groups = _groups(engine, RateLimits(pings=RouteLimits(per_ip=3)))
    batches = [_batch(engine, walker, INSIDE, n) for n in range(2)]
    batches += [_batch(engine, other, INSIDE, n) for n in range(2)]
    results = asyncio.run(_submit_all(groups, batches))
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(refused) == 1, results
    assert "for this ip: 3 per 60 s" in str(refused[0])
    assert engine.count(Ping) == 3, "a refused request stores nothing"


def test_a_refused_request_is_counted_in_the_opening_and_leaves_its_device_free(
    make_engine_api: EngineFactory,
) -> None:
    """The counters are counted in the group's opening, with the locks: a request over its
    limit is refused whether or not its device was free, stores nothing and holds no lock
    after its group."""
    engine = make_engine_api()
    [walker, other] = _shoppers(engine, 2)
    state = engine.runtime.state
    groups = _groups(engine, RateLimits(pings=RouteLimits(per_device=1)))
    first = _batch(engine, walker, INSIDE)
    assert isinstance(asyncio.run(_submit_all(groups, [first]))[0], IngestResult)
    lock = device_lock(first.device_id)
    assert state.acquire_lock(lock, "other-process", 60)  # busy elsewhere, and over its limit

    results = asyncio.run(
        _submit_all(groups, [_batch(engine, walker, INSIDE, 1), _batch(engine, other, INSIDE)])
    )

    assert isinstance(results[0], RateLimited), results  # not DeviceBusy: no waiting for it
    assert "for this device: 1 per 60 s" in str(results[0])
    assert isinstance(results[1], IngestResult)
    assert engine.count(Ping) == 2
    assert state.release_lock(lock, "other-process")
    refused = asyncio.run(_submit_all(groups, [_batch(engine, walker, INSIDE, 2)]))
    assert isinstance(refused[0], RateLimited)
    assert state.acquire_lock(lock, "probe", 60), "the refused request left the lock free"


def test_a_group_retried_request_by_request_counts_each_request_once(
    make_engine_api: EngineFactory,
) -> None:
    """A group that fails after its opening (its counters counted) is retried request by
    request without counting again."""
    engine = make_engine_api()
    shoppers = _shoppers(engine, 4)
    ingest_many = engine.runtime.ingestor.ingest_many

    def failing_after_opening(
        batches: Sequence[PingBatch], *handing: Any
    ) -> list[IngestResult | Exception]:
        outcomes = ingest_many(batches, *handing)
        if len(batches) > 1:
            raise RuntimeError("the group failed after its opening")
        return outcomes

    groups = _groups(engine, RateLimits(pings=RouteLimits(per_ip=5)))
    groups.ingest_many = failing_after_opening
    batches = [_batch(engine, s, INSIDE) for s in shoppers]
    results = asyncio.run(_submit_all(groups, batches))

    assert all(isinstance(r, IngestResult) for r in results), results
    [key] = groups.limiter.counts("pings", _subjects(batches[0])).keys
    assert engine.runtime.state.counter(key) == 4


def test_a_failed_group_is_retried_request_by_request(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api()
    shoppers = _shoppers(engine, 4)
    ingest_many = engine.runtime.ingestor.ingest_many
    sizes: list[int] = []

    def failing_when_grouped(
        batches: Sequence[PingBatch], *handing: Any
    ) -> list[IngestResult | Exception]:
        sizes.append(len(batches))
        if len(batches) > 1:
            raise RuntimeError("the group's transaction failed")
        return ingest_many(batches, *handing)

    groups = _groups(engine)
    groups.ingest_many = failing_when_grouped
    results = asyncio.run(_submit_all(groups, [_batch(engine, s, INSIDE) for s in shoppers]))
    assert all(isinstance(r, IngestResult) for r in results), results
    assert sizes == [1, 3, 1, 1, 1]
    assert engine.count(Ping) == 4


def test_settings_refuse_an_empty_group() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PingGroups(lambda batches: [], None, max_fixes=0)  # type: ignore[arg-type]


def test_a_group_that_crosses_no_fence_writes_in_one_statement_on_postgresql(
    make_engine_api: EngineFactory,
) -> None:
    """Consent from the hot state, no fence crossed, a few fixes: on PostgreSQL the receipts and
    fixes go in one statement outside a transaction (one round trip); a group that enters a
    fence keeps its transaction (for the offer decision) and writes the same one statement in it.
    SQLite always takes the transaction, an insert per table. The rows are the same."""
    engine = make_engine_api()
    [shopper] = _shoppers(engine, 1)
    sa_engine = engine.runtime.engine
    statements: list[str] = []
    commits: list[int] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        statements.append(sql)

    def commit(_conn: Any) -> None:
        commits.append(1)

    def ping(
        point: tuple[float, float], after_s: int = 10
    ) -> tuple[dict[str, Any], list[str], int]:
        engine.clock.advance(timedelta(seconds=after_s))
        statements.clear()
        commits.clear()
        response = engine.ping(shopper, point)
        assert response.status_code == 200, response.text
        return response.json(), list(statements), len(commits)

    ping(OUTSIDE)  # consent read from the database once, then cached
    event.listen(sa_engine, "before_cursor_execute", statement)
    event.listen(sa_engine, "commit", commit)
    try:
        quiet, quiet_statements, quiet_commits = ping(OUTSIDE)
        entering, entering_statements, entering_commits = ping(INSIDE)
        leaving = [ping(OUTSIDE, 40) for _ in range(2)]  # the exit is confirmed after 60 s
    finally:
        event.remove(sa_engine, "before_cursor_execute", statement)
        event.remove(sa_engine, "commit", commit)

    assert quiet["accepted"] == 1 and quiet["events"] == []
    assert [e["kind"] for e in entering["events"]] == ["enter"]
    assert entering_commits == 1
    exit_body, exit_statements, exit_commits = leaving[-1]
    assert [e["kind"] for e in exit_body["events"]] == ["exit"]
    if sa_engine.dialect.name == "postgresql":
        [sql] = quiet_statements
        assert sql.startswith("WITH w0 AS (INSERT INTO consent_receipts")
        assert "INSERT INTO pings" in sql and "fence_events" not in sql
        assert quiet_commits == 0
        [sql] = exit_statements  # an exit leads to no offer: stored the same way
        assert "INSERT INTO pings" in sql and "INSERT INTO fence_events" in sql
        assert exit_commits == 0
        [sql] = [s for s in entering_statements if "INSERT INTO pings" in s]
        assert sql.startswith("WITH w0 AS (INSERT INTO consent_receipts")
        assert "INSERT INTO fence_events" in sql  # the enter, in the transaction committed once
        assert not any(s.startswith("INSERT INTO fence_events") for s in entering_statements)
    else:
        assert len(quiet_statements) == 2 and quiet_commits == 1
        assert len(exit_statements) == 3 and exit_commits == 1
    with engine.runtime.sessions() as session:
        stored = session.scalars(select(Ping).order_by(Ping.recorded_at)).all()
        receipts = session.scalars(
            select(ConsentReceipt)
            .where(ConsentReceipt.action == "ping")
            .order_by(ConsentReceipt.id)
        ).all()
        exited = session.scalars(select(FenceEvent).where(FenceEvent.kind == "exit")).one()
    device_id = read_device_token(
        engine.runtime.settings, shopper["token"], engine.clock.now()
    ).device_id
    assert [(p.status, p.device_id) for p in stored] == [("used", device_id)] * 5
    assert stored[1].recorded_at == engine.clock.now() - timedelta(seconds=90)
    assert len(receipts) == 5
    details = {"device_id": device_id, "fixes": 1}
    assert all(r.allowed and r.details == details for r in receipts)
    assert receipts[1].decided_at == engine.clock.now() - timedelta(seconds=90)
    assert receipts[1].event_id == receipts[4].event_id is not None  # the ledger entry relied on
    assert exit_body["events"][0]["id"] == exited.id
    assert exited.occurred_at == engine.clock.now() and exited.details["duration_s"] == 40.0
    assert (exited.device_id, exited.subject_id) == (device_id, receipts[4].subject_id)


def test_a_group_whose_values_json_cannot_carry_takes_the_transaction(
    make_engine_api: EngineFactory,
) -> None:
    """A fix that reached the ingestor with a value that is not finite (the API refuses such
    input; an internal caller might not) cannot go as the one JSON statement: the group is
    written in its transaction instead, and nothing is lost."""
    engine = make_engine_api()
    [shopper] = _shoppers(engine, 1)
    ingest = engine.runtime.ingestor.ingest_many
    ingest([_batch(engine, shopper, OUTSIDE)])  # consent read from the database once, then cached
    sa_engine = engine.runtime.engine
    commits: list[int] = []

    def commit(_conn: Any) -> None:
        commits.append(1)

    claims = read_device_token(engine.runtime.settings, shopper["token"], engine.clock.now())
    assert claims.subject_id, "the token names its subject: consent comes from the hot state"
    [fix] = _batch(engine, shopper, OUTSIDE, s=10).fixes
    odd = PingBatch(
        claims.device_id,
        claims.token_version,
        [Fix(fix.device_id, fix.lon, fix.lat, fix.recorded_at, 10.0, float("inf"))],
        subject_id=claims.subject_id,
    )
    event.listen(sa_engine, "commit", commit)
    try:
        [result] = ingest([odd])
    finally:
        event.remove(sa_engine, "commit", commit)
    assert isinstance(result, IngestResult) and result.accepted == 1
    assert commits == [1], "the transaction's commit: the one statement was not used"
    with engine.runtime.sessions() as session:
        stored = session.scalars(select(Ping).order_by(Ping.recorded_at)).all()
    assert [p.speed_mps for p in stored] == [None, float("inf")]
    assert engine.count(ConsentReceipt, ConsentReceipt.action == "ping") == 2
