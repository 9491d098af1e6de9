"""Redemption under contention: one code, many tills at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from offers.models import Coupon
from tests.api.conftest import INSIDE, Engine


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
