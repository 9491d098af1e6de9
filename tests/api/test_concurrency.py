"""Contention on both stacks: one code at many tills at once (threads, and 1,000 requests over
real HTTP), and many issuers at once against caps, cooldown and budgets (threads, each with its
own transaction; bounded in count)."""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import uvicorn

from api.app import create_app
from offers.models import Coupon
from tests.api.conftest import INSIDE, POS, STORE_LON, Engine, EngineFactory
from tests.api.coupon_helpers import budget_row, campaign, decide, quick_shopper
from tests.conftest import free_port


def test_concurrent_redemptions_of_one_code_have_exactly_one_winner(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    code = engine_api.ping(engine_api.shopper(), INSIDE).json()["coupons"][0]["code"]
    engine_api.clock.advance(timedelta(minutes=1))
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda _: engine_api.redeem(code, store["id"]).status_code, range(64))
        )
    assert statuses.count(200) == 1
    assert statuses.count(409) == 63
    assert engine_api.count(Coupon, Coupon.status == "redeemed") == 1


def test_a_thousand_concurrent_redemptions_of_one_code_have_one_winner(
    engine_api: Engine,
) -> None:
    """1,000 till requests over real HTTP, each on its own connection, released together against
    the engine served by uvicorn: one redemption, 999 refusals."""
    store = engine_api.create_store()
    campaign(engine_api, [store["id"]])
    [coupon] = engine_api.ping(quick_shopper(engine_api, "c1"), INSIDE).json()["coupons"]
    body = {"code": coupon["code"], "store_id": store["id"]}
    # both ends of every connection live in this process: allow the descriptors if the system
    # lets us, else fewer connections at once (each then answers several requests in turn)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        soft = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    connections = 1000 if soft == resource.RLIM_INFINITY else min(1000, (soft - 512) // 2)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime=engine_api.runtime),
            host="127.0.0.1",
            port=free_port(),
            log_level="warning",
            backlog=2048,
            timeout_keep_alive=300,  # nothing is closed while the storm is answered
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        base = f"http://127.0.0.1:{server.config.port}"

        async def storm() -> list[int]:
            limits = httpx.Limits(max_connections=connections, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
                go = asyncio.Event()

                async def one() -> int:
                    await go.wait()
                    response = await client.post("/v1/pos/redemptions", headers=POS, json=body)
                    return response.status_code

                tasks = [asyncio.create_task(one()) for _ in range(1000)]
                await asyncio.sleep(0)  # every request waits at the gate
                go.set()
                return list(await asyncio.gather(*tasks))

        statuses = asyncio.run(storm())
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert statuses.count(200) == 1, sorted(set(statuses))
    assert statuses.count(409) == 999
    assert engine_api.count(Coupon, Coupon.status == "redeemed") == 1


def test_concurrent_issuance_never_overshoots_a_budget(engine_api: Engine) -> None:
    store = engine_api.create_store()
    by_count = campaign(engine_api, [store["id"]], max_coupons=5)
    by_money = campaign(
        engine_api, [store["id"]], offer={"discount_amount": 300}, max_liability=1000
    )
    shoppers = [quick_shopper(engine_api, f"c{i}") for i in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda s: engine_api.ping(s, INSIDE), shoppers))
    assert {a.status_code for a in answers} == {200}
    assert engine_api.count(Coupon, Coupon.campaign_id == by_count["id"]) == 5
    assert engine_api.count(Coupon, Coupon.campaign_id == by_money["id"]) == 3
    assert budget_row(engine_api, by_count["id"]) == (5, 0)
    assert budget_row(engine_api, by_money["id"]) == (3, 900)


def test_concurrent_events_of_one_shopper_respect_both_daily_caps(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(shopper_daily_offer_cap=3)
    stores = [engine.create_store(lon=STORE_LON + 0.01 * i, name=f"Store {i}") for i in range(8)]
    shared = campaign(engine, [s["id"] for s in stores[:4]], daily_cap_per_shopper=2)
    for store in stores[4:]:
        campaign(engine, [store["id"]], daily_cap_per_shopper=5)
    shopper = quick_shopper(engine, "c1")

    def at(store: dict[str, Any]) -> int:
        return len(decide(engine, shopper, store, kind="enter")[0])

    with ThreadPoolExecutor(max_workers=8) as pool:
        first = list(pool.map(at, stores[:4] * 2))  # one campaign at four stores, cap 2
    assert sum(first) == 2
    assert engine.count(Coupon, Coupon.campaign_id == shared["id"]) == 2
    with ThreadPoolExecutor(max_workers=8) as pool:
        second = list(pool.map(at, stores[4:] * 2))  # four campaigns: the shopper's cap is 3
    assert sum(second) == 1
    assert engine.count(Coupon) == 3


def test_concurrent_events_at_one_store_give_one_coupon_within_the_cooldown(
    engine_api: Engine,
) -> None:
    store = engine_api.create_store()
    campaign(engine_api, [store["id"]], daily_cap_per_shopper=10, store_cooldown_minutes=30)
    shopper = quick_shopper(engine_api, "c1")
    with ThreadPoolExecutor(max_workers=8) as pool:
        issued = list(
            pool.map(lambda _: len(decide(engine_api, shopper, store, kind="enter")[0]), range(8))
        )
    assert sum(issued) == 1
    assert engine_api.count(Coupon) == 1
