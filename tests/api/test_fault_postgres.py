"""PostgreSQL goes away under a running engine: a private cluster (``initdb`` + ``pg_ctl`` on a
free port) is shut down immediately and started again while the engine keeps running.

While it is down every request answers 503 (never 500) and nothing is half-written; once it is
back the same engine serves again without a restart (the pool checks a connection before use,
so connections cut by the restart are replaced, not handed to a request).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import Runtime
from core.clock import ManualClock
from core.settings import Environment, Settings
from geo.models import FenceEvent, Ping
from offers.models import Coupon, Delivery
from tests.api.conftest import INSIDE, OUTSIDE, Engine
from tests.conftest import SmtpInbox
from tests.private_servers import PrivatePostgres


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().init()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def engine_on_private_postgres(
    private_postgres: PrivatePostgres, smtp: tuple[SmtpInbox, int], clock: ManualClock
) -> Iterator[Engine]:
    inbox, port = smtp
    settings = Settings(
        environment=Environment.TEST,
        database_url=private_postgres.url,
        smtp_port=port,
        run_scheduler=False,
        default_holdout_share=0.0,  # this shopper must be treated: no holdout draw
    )
    runtime = Runtime.build(settings, clock=clock)
    runtime.start()
    client = TestClient(create_app(runtime=runtime))
    engine = Engine(runtime, client, clock, inbox)
    engine.publish_notices()
    try:
        yield engine
    finally:
        client.close()
        runtime.stop()


def test_postgres_restart_gives_503_while_down_and_service_after(
    engine_on_private_postgres: Engine, private_postgres: PrivatePostgres
) -> None:
    engine = engine_on_private_postgres
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    shopper = engine.shopper()
    assert engine.ping(shopper, OUTSIDE).status_code == 200

    private_postgres.stop()
    engine.clock.advance(timedelta(seconds=20))
    for response in (
        engine.ping(shopper, INSIDE),
        engine.client.get("/health"),
        engine.client.get("/v1/sdk/offers", headers=shopper["auth"]),
    ):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "unavailable"
        assert response.headers["Retry-After"]

    private_postgres.start()
    engine.clock.advance(timedelta(seconds=20))
    back = engine.ping(shopper, INSIDE)
    assert back.status_code == 200, back.text
    assert [e["kind"] for e in back.json()["events"]] == ["enter"]
    assert len(back.json()["coupons"]) == 1
    assert engine.count(Ping) == 2  # the refused batch left nothing behind
    assert engine.count(FenceEvent) == 1
    assert engine.count(Coupon) == 1 and engine.count(Delivery) == 1
    assert engine.client.get("/health").status_code == 200
