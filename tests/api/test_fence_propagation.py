"""Fence changes reach every API process: two runtimes share PostgreSQL and Redis."""

from __future__ import annotations

import time

import pytest

from tests.api.conftest import INSIDE, EngineFactory
from tests.conftest import Stack


def test_a_new_fence_is_matched_by_another_process_within_two_seconds(
    stack: Stack, make_engine_api: EngineFactory
) -> None:
    if stack.redis_url is None:
        pytest.skip("in-process hot state is one process by definition; needs Redis")
    writer = make_engine_api(run_scheduler=False)
    reader = make_engine_api(run_scheduler=False)  # another API process, its own index
    before = reader.runtime.fences.current().index.version
    store = writer.create_store()
    created = time.monotonic()
    while reader.runtime.fences.current().index.version == before:
        assert time.monotonic() - created < 2.0, "the other process did not see the change in 2 s"
        time.sleep(0.05)
    shopper = reader.shopper()
    events = reader.ping(shopper, INSIDE).json()["events"]
    assert [(e["kind"], e["store_id"]) for e in events] == [("enter", store["id"])]
