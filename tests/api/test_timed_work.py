"""The scheduler's other timed work: reminders before expiry, the expiry transition, campaign
start and stop, and the email fallback when a push fails for good. Moved clock, real SMTP."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from core.db import transaction
from notify.channel import OfferMessage, SendReceipt
from notify.errors import TokenUnregistered
from offers.campaign_clock import CampaignClock
from offers.models import Campaign, Coupon, Delivery
from tests.api.conftest import INSIDE, SDK_KEY, Engine, EngineFactory
from tests.conftest import text_of


def _deliveries(engine: Engine) -> list[Delivery]:
    with engine.runtime.sessions() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.due_at)))


def _offer_sent(engine: Engine, valid_minutes: int = 15) -> tuple[dict[str, object], Delivery]:
    store = engine.create_store()
    engine.create_campaign([store["id"]], valid_minutes=valid_minutes)
    engine.ping(engine.shopper(), INSIDE)
    [offer] = _deliveries(engine)
    report = engine.runtime.worker.deliver(offer.id)
    assert report is not None and report.status == "sent"
    return store, offer


def test_a_reminder_goes_out_n_minutes_before_expiry(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(run_scheduler=False, reminder_minutes_before=5)
    _, offer = _offer_sent(engine)
    reminder = next(d for d in _deliveries(engine) if d.kind == "reminder")
    with engine.runtime.sessions() as session:
        coupon = session.get(Coupon, offer.coupon_id)
        assert coupon is not None
    assert reminder.channel == "email" and reminder.due_at == coupon.expires_at - timedelta(
        minutes=5
    )
    engine.clock.set(reminder.due_at)
    report = engine.runtime.worker.deliver(reminder.id)
    assert report is not None and report.status == "sent"
    mails = engine.inbox.wait_for(2)
    assert mails[-1]["X-Offer-Engine-Idempotency-Key"] == f"{coupon.id}:email:reminder"
    assert "5 min left" in mails[-1]["Subject"]
    assert len([d for d in _deliveries(engine) if d.kind == "reminder"]) == 1  # no chain


def test_no_reminder_for_a_redeemed_coupon(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(run_scheduler=False, reminder_minutes_before=5)
    store, offer = _offer_sent(engine)
    with engine.runtime.sessions() as session:
        coupon = session.get(Coupon, offer.coupon_id)
        assert coupon is not None
    assert engine.redeem(coupon.code, str(store["id"])).status_code == 200
    reminder = next(d for d in _deliveries(engine) if d.kind == "reminder")
    engine.clock.set(reminder.due_at)
    report = engine.runtime.worker.deliver(reminder.id)
    assert report is not None and report.status == "cancelled"
    assert len(engine.inbox.messages) == 1  # only the offer itself


def test_no_reminder_when_the_coupon_is_too_short_lived(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(run_scheduler=False, reminder_minutes_before=5)
    _offer_sent(engine, valid_minutes=5)  # the reminder instant is now: nothing to add
    assert [d.kind for d in _deliveries(engine)] == ["offer"]


def test_expiry_turns_issued_coupons_expired_and_drops_pending_sends(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]], valid_minutes=3)
    engine.ping(engine.shopper(), INSIDE)
    [pending] = _deliveries(engine)
    sessions = engine.runtime.sessions
    expiry = engine.runtime.expiry
    assert expiry is not None
    assert expiry.expire_due(engine.clock.now()).expired == 0
    engine.clock.advance(timedelta(minutes=3) + expiry.grace)
    assert expiry.expire_due(engine.clock.now()).expired == 1
    with sessions() as session:
        [coupon] = session.scalars(select(Coupon)).all()
    assert coupon.status == "expired"
    with transaction(sessions) as session:
        from offers.repository import DeliveryRepository

        assert DeliveryRepository(session).drop_expired(engine.clock.now(), timedelta(0)) == 1
    [after] = _deliveries(engine)
    assert after.id == pending.id and after.status == "expired_undelivered"
    assert engine.inbox.messages == []


def test_the_leader_expires_coupons_on_its_own(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(scheduler_lease_ttl_s=120.0, scheduler_heartbeat_s=60.0)
    store = engine.create_store()
    engine.create_campaign([store["id"]], valid_minutes=3)
    engine.ping(engine.shopper(), INSIDE)
    assert engine.next_report().status == "sent"
    assert engine.runtime.expiry is not None
    engine.clock.advance(timedelta(minutes=3) + engine.runtime.expiry.grace)  # the till's grace
    engine.runtime.scheduler.tick()  # renew the lease at the moved clock
    assert engine.runtime.scheduler.expire() == (1, 0)
    assert engine.count(Coupon, Coupon.status == "expired") == 1


def test_the_next_leader_sends_the_reminder_and_ends_the_campaign_on_its_own(
    make_engine_api: EngineFactory,
) -> None:
    """The running scheduler, not a direct call: the process that sent the offer stops; the next
    leader rebuilds its work from the outbox, sends the reminder once it is due and ends the
    campaign once ``ends_at`` has passed."""
    slow = {"scheduler_lease_ttl_s": 120.0, "scheduler_heartbeat_s": 60.0}
    first = make_engine_api(reminder_minutes_before=5, **slow)
    store = first.create_store()
    now = first.clock.now()
    ends = now + timedelta(minutes=30)
    campaign = first.create_campaign([store["id"]], ends_at=ends.isoformat())
    first.ping(first.shopper(), INSIDE)
    assert first.next_report().status == "sent"  # the offer
    reminder = next(d for d in _deliveries(first) if d.kind == "reminder")
    first.runtime.stop()  # an orderly stop gives the lease up
    first.clock.set(reminder.due_at)
    second = make_engine_api(publish=False, reminder_minutes_before=5, **slow)
    assert second.runtime.scheduler.leading
    report = second.next_report()
    assert (report.delivery_id, report.status) == (reminder.id, "sent")
    assert "5 min left" in second.inbox.wait_for(2)[-1]["Subject"]
    second.clock.set(ends)
    second.runtime.scheduler.tick()  # renew the lease at the moved clock
    second.runtime.scheduler.expire()
    with second.runtime.sessions() as session:
        stored = session.get(Campaign, campaign["id"])
        assert stored is not None and stored.status == "ended"


def test_campaigns_start_and_stop_at_their_instants(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    now = engine.clock.now()
    created = engine.create_campaign(
        [store["id"]],
        starts_at=(now + timedelta(minutes=10)).isoformat(),
        ends_at=(now + timedelta(minutes=70)).isoformat(),
    )
    with transaction(engine.runtime.sessions) as session:  # e.g. created paused-until-start
        session.execute(
            update(Campaign).where(Campaign.id == created["id"]).values(status="scheduled")
        )
    clock = CampaignClock(engine.runtime.sessions)
    assert clock.boundaries(now, now + timedelta(hours=2)) == [
        now + timedelta(minutes=10),
        now + timedelta(minutes=70),
    ]
    assert clock.apply(now + timedelta(minutes=9)) == (0, 0)
    assert clock.apply(now + timedelta(minutes=10)) == (1, 0)
    assert clock.apply(now + timedelta(minutes=70)) == (0, 1)
    with engine.runtime.sessions() as session:
        campaign = session.get(Campaign, created["id"])
        assert campaign is not None and campaign.status == "ended"


class DeadToken:
    name = "push"

    def __init__(self) -> None:
        self.sent: list[OfferMessage] = []

    def send(self, message: OfferMessage) -> SendReceipt:
        self.sent.append(message)
        raise TokenUnregistered("FCM 404 UNREGISTERED")


def _push_and_email_shopper(engine: Engine) -> dict[str, object]:
    device = engine.shopper(email="both@example.com", customer="both-1")
    response = engine.client.post(  # the same shopper's phone, with a push token
        "/v1/sdk/devices",
        headers=SDK_KEY,
        json={
            "customer_ref": "both-1",
            "platform": "android",
            "push_token": "tok-dead",
            "email": "both@example.com",
        },
    )
    assert response.status_code == 201, response.text
    phone = dict(response.json())
    phone["auth"] = {"Authorization": f"Bearer {phone['token']}"}
    engine.consent(phone, "marketing_offers", channel="push")
    del device
    return phone


def test_push_is_preferred_and_a_dead_token_falls_back_to_email(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(run_scheduler=False)
    push = DeadToken()
    engine.runtime.worker.channels = {**engine.runtime.worker.channels, "push": push}
    engine.runtime.ingestor.channels = {*engine.runtime.ingestor.channels, "push"}
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    phone = _push_and_email_shopper(engine)
    engine.ping(phone, INSIDE)
    [first] = _deliveries(engine)
    assert first.channel == "push"  # one channel: push first, email only as the fallback
    report = engine.runtime.worker.deliver(first.id)
    assert report is not None and report.status == "failed" and len(push.sent) == 1
    assert push.sent[0].platform == "android"
    fallback = next(d for d in _deliveries(engine) if d.channel == "email")
    assert fallback.status == "pending" and fallback.address == "both@example.com"
    sent = engine.runtime.worker.deliver(fallback.id)
    assert sent is not None and sent.status == "sent"
    [mail] = engine.inbox.wait_for(1)
    assert "/c/" in text_of(mail) and "/c/" in text_of(mail, "html")


def test_no_email_fallback_without_email_consent(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(run_scheduler=False)
    engine.runtime.worker.channels = {**engine.runtime.worker.channels, "push": DeadToken()}
    engine.runtime.ingestor.channels = {*engine.runtime.ingestor.channels, "push"}
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    phone = _push_and_email_shopper(engine)
    engine.consent(phone, "marketing_offers", granted=False, channel="email")
    engine.ping(phone, INSIDE)
    [first] = _deliveries(engine)
    engine.runtime.worker.deliver(first.id)
    assert [d.channel for d in _deliveries(engine)] == ["push"]


def test_countdown_page_shows_time_left_and_no_personal_data(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]], valid_minutes=10)
    engine.ping(engine.shopper(), INSIDE)
    with engine.runtime.sessions() as session:
        [coupon] = session.scalars(select(Coupon)).all()
    engine.clock.advance(timedelta(minutes=4))
    page = engine.client.get(f"/c/{coupon.code}")
    assert page.status_code == 200 and 'data-remaining="360"' in page.text
    assert "shopper@example.com" not in page.text and coupon.subject_id not in page.text
    facts = engine.client.get(f"/c/{coupon.code}", headers={"Accept": "application/json"})
    assert facts.json()["remaining_s"] == 360 and facts.json()["status"] == "issued"
    engine.clock.advance(timedelta(minutes=7))
    late = engine.client.get(f"/c/{coupon.code}", headers={"Accept": "application/json"})
    assert late.json()["status"] == "expired" and late.json()["remaining_s"] == 0
    missing = engine.client.get("/c/ZZZZZ-ZZZZZ")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "coupon_not_found"
