"""Deliveries: sent only while the coupon lives and the channel's consent holds, retried only while
time remains, and never lost across a restart."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from offers.models import Delivery
from tests.api.conftest import INSIDE, Engine, EngineFactory


def _pending_delivery(engine: Engine) -> Delivery:
    with engine.runtime.sessions() as session:
        [delivery] = session.scalars(select(Delivery)).all()
        return delivery


def test_delivery_due_after_expiry_is_dropped_not_sent(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]], valid_minutes=3)
    engine.ping(engine.shopper(), INSIDE)
    delivery = _pending_delivery(engine)
    assert delivery.status == "pending"

    engine.clock.advance(timedelta(minutes=3) - timedelta(seconds=2))  # inside the 5 s margin
    report = engine.runtime.worker.deliver(delivery.id)
    assert report is not None and report.status == "expired_undelivered"
    assert engine.inbox.messages == []
    assert engine.runtime.worker.deliver(delivery.id) is None  # final: never picked up again


def test_channel_consent_is_checked_at_the_moment_of_sending(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    shopper = engine.shopper()
    engine.ping(shopper, INSIDE)
    engine.consent(shopper, "marketing_offers", granted=False, channel="email")
    report = engine.runtime.worker.deliver(_pending_delivery(engine).id)
    assert report is not None and report.status == "no_consent"
    assert engine.inbox.messages == []
    delivery = _pending_delivery(engine)
    assert delivery.consent_event_id is not None  # the receipt names the withdrawal it obeyed


def test_smtp_down_retries_while_time_remains_then_gives_up(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]], valid_minutes=2)
    shopper = engine.shopper()  # confirmed offers by email while SMTP was up
    engine.smtp_goes_down()
    engine.ping(shopper, INSIDE)
    delivery_id = _pending_delivery(engine).id

    first = engine.runtime.worker.deliver(delivery_id)
    assert first is not None and first.status == "pending" and "retry in" in first.detail
    retried = _pending_delivery(engine)
    assert retried.attempts == 1 and retried.due_at > engine.clock.now()

    engine.clock.advance(timedelta(seconds=113))  # 2 s before the margin: shorter than any backoff
    last = engine.runtime.worker.deliver(delivery_id)
    assert last is not None and last.status == "expired_undelivered"
    assert "no time left" in last.detail
    assert _pending_delivery(engine).attempts == 2


def test_smtp_permanent_refusal_is_not_retried(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    shopper = engine.shopper()  # confirmed by email before the mailbox went away
    engine.inbox.refuse_with = "550 mailbox unavailable"
    engine.ping(shopper, INSIDE)
    report = engine.runtime.worker.deliver(_pending_delivery(engine).id)
    assert report is not None and report.status == "failed" and "550" in report.detail


def test_outbox_survives_a_restart_and_is_sent_once(make_engine_api: EngineFactory) -> None:
    api_only = make_engine_api(run_scheduler=False)
    store = api_only.create_store()
    api_only.create_campaign([store["id"]])
    api_only.ping(api_only.shopper(), INSIDE)
    assert _pending_delivery(api_only).status == "pending"
    api_only.runtime.stop()

    with_scheduler = make_engine_api()  # a new process: the sweep finds the outbox row
    report = with_scheduler.next_report()
    assert report.status == "sent"
    assert len(with_scheduler.inbox.wait_for(1)) == 1
    assert with_scheduler.runtime.scheduler.sweep() == 0
    assert with_scheduler.runtime.worker.deliver(report.delivery_id) is None
    assert len(with_scheduler.inbox.messages) == 1


def test_a_retry_waits_in_the_outbox_row_and_a_new_leader_runs_it(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api()  # scheduler on: this process leads
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    shopper = engine.shopper()
    engine.smtp_goes_down()
    engine.ping(shopper, INSIDE)
    report = engine.next_report()
    assert report.status == "pending" and "retry in" in report.detail
    waiting = _pending_delivery(engine)
    assert waiting.status == "pending" and waiting.due_at > engine.clock.now()
    engine.runtime.stop()  # its in-memory jobs are gone; the row is the truth

    successor = make_engine_api(publish=False)  # takes the released lease, rebuilds from rows
    assert successor.runtime.scheduler.leading
    successor.clock.set(waiting.due_at)
    sent = successor.next_report()
    assert sent.status == "sent" and sent.delivery_id == waiting.id
    assert len(successor.inbox.wait_for(1)) == 1
