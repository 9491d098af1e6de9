"""The push provider fails: the engine's real FCM channel (notify/fcm.py) talks to a local server
that follows FCM HTTP v1's documented answers (tests/integration/push_fakes.py; FCM itself
cannot be reached from here). A 503 or 429 with Retry-After is retried no sooner than asked and
only while the coupon lives; nothing reaches the provider after the coupon's expiry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from core.clock import ManualClock
from notify.fcm import FcmChannel
from offers.models import Delivery
from tests.api.conftest import INSIDE, SDK_KEY, Engine, EngineFactory
from tests.integration.push_fakes import Answer, FakeFcm, fcm_error, serve_in_thread
from tests.integration.test_push_channels import (
    CLIENT_EMAIL,
    PROJECT,
    SA_KEY_ID,
    pem,
)


@pytest.fixture(scope="module")
def service_account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def fcm_server(service_account_key: rsa.RSAPrivateKey) -> Iterator[FakeFcm]:
    fake = FakeFcm(
        ManualClock(), PROJECT, CLIENT_EMAIL, SA_KEY_ID, service_account_key.public_key()
    )
    with serve_in_thread(fake.app) as url:
        fake.base_url = url
        yield fake


def _answer(status: int, name: str, retry_after_s: int) -> Answer:
    code = "QUOTA_EXCEEDED" if status == 429 else "UNAVAILABLE"
    return Answer(status, fcm_error(status, name, code), {"Retry-After": str(retry_after_s)})


@pytest.fixture
def push_engine(
    make_engine_api: EngineFactory, fcm_server: FakeFcm, service_account_key: rsa.RSAPrivateKey
) -> Iterator[Engine]:
    engine = make_engine_api(run_scheduler=False)
    fcm_server.reset(engine.clock)
    info = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": SA_KEY_ID,
        "private_key": pem(service_account_key),
        "client_email": CLIENT_EMAIL,
        "token_uri": fcm_server.token_uri,
    }
    with httpx.Client(timeout=5, trust_env=False) as http:
        channel = FcmChannel(
            PROJECT, info, base_url=fcm_server.base_url, http=http, clock=engine.clock
        )
        engine.runtime.worker.channels = {**engine.runtime.worker.channels, "push": channel}
        engine.runtime.ingestor.channels = {*engine.runtime.ingestor.channels, "push"}
        yield engine


def _push_delivery(engine: Engine, token: str) -> str:
    response = engine.client.post(
        "/v1/sdk/devices",
        headers=SDK_KEY,
        json={"customer_ref": f"push-{token}", "platform": "android", "push_token": token},
    )
    assert response.status_code == 201, response.text
    device: dict[str, Any] = response.json()
    device["auth"] = {"Authorization": f"Bearer {device['token']}"}
    engine.consent(device, "location_tracking")
    engine.consent(device, "marketing_offers", channel="push")
    assert engine.ping(device, INSIDE).json()["coupons"], "no coupon issued"
    with engine.runtime.sessions() as session:
        [delivery] = (
            session.query(Delivery)
            .filter(Delivery.channel == "push", Delivery.address == token)
            .all()
        )
        return delivery.id


def _delivery(engine: Engine, delivery_id: str) -> Delivery:
    with engine.runtime.sessions() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        return delivery


def _sends(fake: FakeFcm, token: str) -> list[dict[str, Any]]:
    return [
        s.decoded["message"]
        for s in fake.seen
        if s.path.endswith("/messages:send") and s.decoded["message"]["token"] == token
    ]


def test_503_then_429_are_retried_after_their_retry_after_then_sent_once(
    push_engine: Engine, fcm_server: FakeFcm
) -> None:
    engine = push_engine
    store = engine.create_store()
    engine.create_campaign([store["id"]], valid_minutes=5)
    delivery_id = _push_delivery(engine, "tok-retry")
    fcm_server.script(
        "tok-retry", _answer(503, "UNAVAILABLE", 7), _answer(429, "RESOURCE_EXHAUSTED", 30)
    )
    worker = engine.runtime.worker

    first = worker.deliver(delivery_id)
    assert first is not None and first.status == "pending"
    due = _delivery(engine, delivery_id).due_at
    assert due >= engine.clock.now() + timedelta(seconds=7)

    engine.clock.advance(due - engine.clock.now())
    second = worker.deliver(delivery_id)
    assert second is not None and second.status == "pending"
    due = _delivery(engine, delivery_id).due_at
    assert due >= engine.clock.now() + timedelta(seconds=30)

    engine.clock.advance(due - engine.clock.now())
    third = worker.deliver(delivery_id)
    assert third is not None and third.status == "sent", third
    sent = _sends(fcm_server, "tok-retry")
    assert len(sent) == 3  # two refused, one accepted: never twice
    ttl_s = int(sent[-1]["android"]["ttl"].removesuffix("s"))
    assert 0 < ttl_s <= 5 * 60 - 37  # the TTL ends at the coupon's expiry
    assert worker.deliver(delivery_id) is None  # final: a late duplicate job sends nothing
    assert len(_sends(fcm_server, "tok-retry")) == 3


def test_a_retry_after_beyond_the_coupons_life_ends_expired_undelivered(
    push_engine: Engine, fcm_server: FakeFcm
) -> None:
    engine = push_engine
    store = engine.create_store()
    engine.create_campaign([store["id"]], valid_minutes=2)
    delivery_id = _push_delivery(engine, "tok-late")
    fcm_server.script("tok-late", _answer(503, "UNAVAILABLE", 600))

    report = engine.runtime.worker.deliver(delivery_id)
    assert report is not None and report.status == "expired_undelivered"
    assert "no time left" in report.detail
    engine.clock.advance(timedelta(minutes=10))
    assert engine.runtime.worker.deliver(delivery_id) is None
    assert len(_sends(fcm_server, "tok-late")) == 1  # nothing after the one refused attempt
    assert _delivery(engine, delivery_id).status == "expired_undelivered"
