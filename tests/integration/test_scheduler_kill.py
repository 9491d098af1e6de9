"""kill -9 of the scheduler process in the middle of a batch: nothing lost, nothing duplicated.

Real processes (``offer-engine scheduler``) on the test's stack (SQLite file + in-process state,
or PostgreSQL + Redis), sending signed webhooks to a local HTTP sink. The first process is
SIGKILLed once part of the batch has arrived; a second one takes the lease over after its TTL
and finishes. "Duplicated" is judged as a receiver that dedups by ``Idempotency-Key`` sees it:
each delivery reaches the sink under exactly one key, and a key may arrive again only for a send
that was in flight at the moment of the kill (the same key, so the receiver drops it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from api.bench.coupon_seed import seed_webhook_coupons
from api.bench.sink import WebhookSink
from api.runtime import Runtime
from offers.models import Delivery
from offers.scheduler import DEFAULT_BATCH
from tests.conftest import Stack

pytestmark = pytest.mark.integration

SECRET = "whsec_" + "k1ll" * 8
LIVE, DOOMED = 240, 10
THREADS = 4
BOUND_S = 90.0  # the whole scenario must finish within this, or the test fails


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    receiver = WebhookSink(SECRET, delay_s=0.03).start()  # slow enough to kill mid-batch
    yield receiver
    receiver.stop()


def _environment(stack: Stack, sink: WebhookSink) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFER_ENGINE_")}
    env.update(
        {
            "OFFER_ENGINE_ENVIRONMENT": "test",
            "OFFER_ENGINE_DATABASE_URL": stack.database_url,
            "OFFER_ENGINE_REDIS_KEY_PREFIX": stack.redis_prefix,
            "OFFER_ENGINE_WEBHOOK_URL": sink.url,
            "OFFER_ENGINE_WEBHOOK_SECRET": SECRET,
            "OFFER_ENGINE_SCHEDULER_LEASE_TTL_S": "2",
            "OFFER_ENGINE_SCHEDULER_HEARTBEAT_S": "0.5",
            "OFFER_ENGINE_SCHEDULER_SWEEP_S": "0.5",
            "OFFER_ENGINE_SCHEDULER_THREADS": str(THREADS),
        }
    )
    if stack.redis_url:
        env["OFFER_ENGINE_REDIS_URL"] = stack.redis_url
    return env


def _scheduler(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "scheduler"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        cwd=Path(__file__).resolve().parents[2],
    )


def _wait(condition: Callable[[], bool], deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND_S} s: {what}")
        time.sleep(0.05)


def test_kill_9_mid_batch_loses_nothing_and_duplicates_nothing(
    stack: Stack, sink: WebhookSink, tmp_path: Path
) -> None:
    deadline = time.monotonic() + BOUND_S
    settings = stack.settings(run_scheduler=False)
    runtime = Runtime.build(settings)
    runtime.start()
    now = datetime.now(UTC)
    seeded = seed_webhook_coupons(
        runtime.sessions,
        runtime.ledger_config,
        count=LIVE + DOOMED,
        now=now,
        due_at=lambda i: now + timedelta(milliseconds=4 * i),
        # The last few have less than the 5 s sending margin left: to be dropped, never sent.
        expires_at=lambda i: now + (timedelta(minutes=10) if i < LIVE else timedelta(seconds=3)),
    )
    runtime.stop()
    env = _environment(stack, sink)

    first = _scheduler(env, tmp_path / "first.log")
    try:
        _wait(lambda: sink.count() >= LIVE // 4, deadline, "the first scheduler to start sending")
        first.send_signal(signal.SIGKILL)  # mid-batch: some sends are claimed, in flight
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    arrived_before_kill = sink.count()
    assert arrived_before_kill < LIVE, "the batch finished before the kill; nothing was tested"

    second = _scheduler(env, tmp_path / "second.log")
    check = Runtime.build(settings)
    try:

        def all_final() -> bool:
            with check.sessions() as session:
                statuses = session.scalars(select(Delivery.status)).all()
            return all(s not in ("pending", "sending") for s in statuses)

        _wait(all_final, deadline, "every delivery to reach a final state")
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=15)
        except subprocess.TimeoutExpired:
            second.kill()

    with check.sessions() as session:
        rows = {d.id: d for d in session.scalars(select(Delivery))}
    check.engine.dispose()
    receipts = sink.snapshot()
    arrivals = Counter(r.key for r in receipts)
    live = seeded[:LIVE]
    doomed = seeded[LIVE:]

    # Nothing lost: every live delivery is recorded sent and its key reached the sink.
    assert all(rows[s.delivery_id].status == "sent" for s in live)
    assert {s.idempotency_key for s in live} == set(arrivals)
    # Never late, never unsigned; the doomed ones were dropped and recorded, never sent.
    assert all(r.received_at < r.expires_at for r in receipts)
    assert all(r.signed for r in receipts)
    assert all(rows[s.delivery_id].status == "expired_undelivered" for s in doomed)
    assert not {s.idempotency_key for s in doomed} & set(arrivals)
    # Nothing duplicated for a receiver deduping by key: a key arrives again only for a send
    # claimed but not yet recorded at the kill (at most one batch per sending thread), once, and
    # always under the same key.
    repeated = {key: n for key, n in arrivals.items() if n > 1}
    assert len(repeated) <= THREADS * DEFAULT_BATCH and all(n == 2 for n in repeated.values())
    retried = [d for d in rows.values() if d.attempts > 1]
    assert {f"{d.coupon_id}:webhook" for d in retried} >= set(repeated)
