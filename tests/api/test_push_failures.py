"""How the delivery worker treats a push provider's answers: an unregistered token is forgotten,
a Retry-After is honoured. The provider here is a channel double raising the errors the real
channels (notify/fcm.py, apns.py, webpush.py) raise for the providers' documented answers."""

from __future__ import annotations

from datetime import timedelta

from consent.models import Device
from notify.channel import OfferMessage, SendReceipt
from notify.errors import RateLimited, TokenUnregistered
from tests.api.conftest import INSIDE, SDK_KEY, Engine, EngineFactory


class ProviderAnswering:
    name = "push"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.sent: list[OfferMessage] = []

    def send(self, message: OfferMessage) -> SendReceipt:
        self.sent.append(message)
        raise self.error


def _push_shopper(engine: Engine) -> tuple[str, str]:
    response = engine.client.post(
        "/v1/sdk/devices",
        headers=SDK_KEY,
        json={"customer_ref": "push-1", "platform": "android", "push_token": "tok-123"},
    )
    assert response.status_code == 201, response.text
    device = response.json()
    device["auth"] = {"Authorization": f"Bearer {device['token']}"}
    engine.consent(device, "location_tracking")
    engine.consent(device, "marketing_offers", channel="push")
    engine.ping(device, INSIDE)
    with engine.runtime.sessions() as session:
        from offers.models import Delivery

        [delivery] = session.query(Delivery).filter(Delivery.channel == "push").all()
    return device["device_id"], delivery.id


def _engine_with(make_engine_api: EngineFactory, channel: ProviderAnswering) -> Engine:
    engine = make_engine_api(run_scheduler=False)
    engine.runtime.worker.channels = {**engine.runtime.worker.channels, "push": channel}
    engine.runtime.ingestor.channels = {*engine.runtime.ingestor.channels, "push"}
    store = engine.create_store()
    engine.create_campaign([store["id"]], valid_minutes=15)
    return engine


def test_unregistered_token_is_forgotten_and_not_retried(make_engine_api: EngineFactory) -> None:
    provider = ProviderAnswering(TokenUnregistered("410 Unregistered"))
    engine = _engine_with(make_engine_api, provider)
    device_id, delivery_id = _push_shopper(engine)
    report = engine.runtime.worker.deliver(delivery_id)
    assert report is not None and report.status == "failed"
    assert len(provider.sent) == 1 and provider.sent[0].ttl_s > 0
    with engine.runtime.sessions() as session:
        device = session.get(Device, device_id)
        assert device is not None and device.push_token is None


def test_retry_after_is_honoured(make_engine_api: EngineFactory) -> None:
    provider = ProviderAnswering(RateLimited("429 QUOTA_EXCEEDED", retry_after_s=120.0))
    engine = _engine_with(make_engine_api, provider)
    _, delivery_id = _push_shopper(engine)
    report = engine.runtime.worker.deliver(delivery_id)
    assert report is not None and report.status == "pending"
    with engine.runtime.sessions() as session:
        from offers.models import Delivery

        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        assert delivery.due_at >= engine.clock.now() + timedelta(seconds=120)
