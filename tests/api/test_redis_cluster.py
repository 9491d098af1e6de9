"""The engine on a Redis Cluster (``OFFER_ENGINE_REDIS_CLUSTER=true``): a private 3-master
cluster, the whole ping path (consent gate cache, presence, daily caps, fence-index signal) and a
withdrawal taking effect at once. Keys read together share a hash tag, so no command meets
CROSSSLOT."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from offers.models import Coupon
from tests.api.conftest import INSIDE, OUTSIDE, EngineFactory
from tests.private_servers import PrivateRedisCluster


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[PrivateRedisCluster]:
    cluster = PrivateRedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.close()


def test_the_ping_path_runs_on_a_redis_cluster(
    make_engine_api: EngineFactory, redis_cluster: PrivateRedisCluster
) -> None:
    engine = make_engine_api(redis_url=redis_cluster.url, redis_cluster=True)
    assert engine.client.get("/health").json()["hot_state"] == "redis"
    store = engine.create_store()
    engine.create_campaign([store["id"]], cap=1)
    shoppers = [engine.shopper(email=f"s{i}@example.com", customer=f"c{i}") for i in range(4)]
    for shopper in shoppers:
        assert engine.ping(shopper, OUTSIDE).status_code == 200
    engine.clock.advance(timedelta(seconds=30))
    for shopper in shoppers:
        answer = engine.ping(shopper, INSIDE)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["coupons"]) == 1
    assert engine.count(Coupon) == len(shoppers)

    engine.consent(shoppers[0], "location_tracking", granted=False)
    engine.clock.advance(timedelta(seconds=30))
    refused = engine.ping(shoppers[0], OUTSIDE)
    assert refused.status_code == 403, refused.text  # the cached grant was dropped everywhere
