"""The SMTP server stops: a real aiosmtpd server for offer email is stopped under the engine and,
in one case, started again on the same port. Retries happen only within the coupon's life; a
coupon outlived by the outage ends ``expired_undelivered`` and is never mailed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller

from notify.email import SmtpEmailChannel
from offers.models import Coupon, Delivery
from tests.api.conftest import INSIDE, Engine, EngineFactory
from tests.conftest import SmtpInbox, free_port


class OfferMailServer:
    """aiosmtpd on a fixed port that can be stopped and started again."""

    def __init__(self) -> None:
        self.inbox = SmtpInbox()
        self.port = free_port()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def offer_mail() -> Iterator[OfferMailServer]:
    server = OfferMailServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _engine(make_engine_api: EngineFactory, mail: OfferMailServer) -> tuple[Engine, dict[str, str]]:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]], valid_minutes=3)
    shopper = engine.shopper()  # confirmed through the fixture's SMTP server
    sender = engine.runtime.settings.email_from
    engine.runtime.channels["email"] = SmtpEmailChannel("127.0.0.1", mail.port, sender, 2)
    return engine, shopper


def _delivery(engine: Engine) -> Delivery:
    with engine.runtime.sessions() as session:
        [delivery] = session.query(Delivery).filter(Delivery.channel == "email").all()
        return delivery


def _expiry(engine: Engine) -> object:
    with engine.runtime.sessions() as session:
        [coupon] = session.query(Coupon).all()
        return coupon.expires_at


def test_smtp_back_within_the_coupons_life_delivers_once(
    make_engine_api: EngineFactory, offer_mail: OfferMailServer
) -> None:
    engine, shopper = _engine(make_engine_api, offer_mail)
    offer_mail.stop()
    assert engine.ping(shopper, INSIDE).json()["coupons"]
    delivery_id = _delivery(engine).id

    first = engine.runtime.worker.deliver(delivery_id)
    assert first is not None and first.status == "pending" and "retry in" in first.detail
    offer_mail.start()  # the same port again
    engine.clock.advance(_delivery(engine).due_at - engine.clock.now())
    second = engine.runtime.worker.deliver(delivery_id)
    assert second is not None and second.status == "sent", second
    [mail] = offer_mail.inbox.wait_for(1)
    assert mail["To"] == shopper["email"]
    assert _delivery(engine).attempts == 2
    assert engine.runtime.worker.deliver(delivery_id) is None
    assert len(offer_mail.inbox.messages) == 1


def test_smtp_down_for_the_coupons_whole_life_ends_expired_undelivered(
    make_engine_api: EngineFactory, offer_mail: OfferMailServer
) -> None:
    engine, shopper = _engine(make_engine_api, offer_mail)
    offer_mail.stop()
    engine.ping(shopper, INSIDE)
    delivery_id = _delivery(engine).id
    expires_at = _expiry(engine)
    margin = timedelta(seconds=engine.runtime.settings.delivery_margin_s)
    attempts_at = []
    for _ in range(50):  # bounded: backoff grows, the coupon lives 3 minutes
        attempts_at.append(engine.clock.now())
        report = engine.runtime.worker.deliver(delivery_id)
        assert report is not None
        if report.status != "pending":
            break
        engine.clock.advance(_delivery(engine).due_at - engine.clock.now())
    assert report.status == "expired_undelivered", report
    assert len(attempts_at) >= 3  # it did retry while time remained
    assert all(at < expires_at - margin for at in attempts_at)  # type: ignore[operator]

    offer_mail.start()
    engine.clock.advance(timedelta(minutes=5))
    assert engine.runtime.worker.deliver(delivery_id) is None
    assert offer_mail.inbox.messages == []
    assert _delivery(engine).status == "expired_undelivered"
