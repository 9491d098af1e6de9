"""The first end-to-end path over HTTP, on SQLite + in-process state and on PostgreSQL + Redis."""

from __future__ import annotations

from datetime import datetime, timedelta

from consent.models import ConsentEvent, SubjectKey
from geo.models import FenceEvent, Ping
from offers.models import Coupon, Delivery
from tests.api.conftest import INSIDE, OUTSIDE, Engine
from tests.conftest import text_of


def test_enter_issues_a_coupon_sent_by_email_and_redeemed_once(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], valid_minutes=15)
    shopper = engine_api.shopper(email="walker@example.com")

    outside = engine_api.ping(shopper, OUTSIDE)
    assert outside.status_code == 200, outside.text
    assert outside.json()["events"] == [] and outside.json()["coupons"] == []

    engine_api.clock.advance(timedelta(seconds=30))
    inside = engine_api.ping(shopper, INSIDE)
    assert inside.status_code == 200, inside.text
    body = inside.json()
    assert [e["kind"] for e in body["events"]] == ["enter"]
    assert body["events"][0]["store_id"] == store["id"]
    [coupon] = body["coupons"]
    expires = datetime.fromisoformat(coupon["expires_at"])
    assert expires == engine_api.clock.now() + timedelta(minutes=15)
    assert coupon["remaining_s"] == 15 * 60
    assert coupon["channels"] == ["email"]

    [message] = engine_api.inbox.wait_for(1)
    assert message["To"] == "walker@example.com"
    text = text_of(message)
    assert coupon["code"] in text
    assert expires.strftime("%H:%M:%S UTC") in text
    report = engine_api.next_report()
    assert (report.status, report.attempts) == ("sent", 1)

    engine_api.clock.advance(timedelta(minutes=5))
    first = engine_api.redeem(coupon["code"], store["id"])
    assert first.status_code == 200, first.text
    assert first.json()["discount_text"] == "30% off"
    second = engine_api.redeem(coupon["code"], store["id"])
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "coupon_already_redeemed"


def test_code_is_read_the_way_a_cashier_types_it(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    shopper = engine_api.shopper()
    code = engine_api.ping(shopper, INSIDE).json()["coupons"][0]["code"]
    typed = code.lower().replace("-", " ").replace("1", "l").replace("0", "o")
    assert engine_api.redeem(typed, store["id"]).status_code == 200


def test_redemption_after_expiry_is_refused_with_410(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], valid_minutes=5)
    coupon = engine_api.ping(engine_api.shopper(), INSIDE).json()["coupons"][0]
    grace = timedelta(seconds=engine_api.runtime.settings.redemption_grace_s)
    engine_api.clock.advance(timedelta(minutes=5) + grace)  # the end of the grace is too late
    late = engine_api.redeem(coupon["code"], store["id"])
    assert late.status_code == 410
    assert late.json()["error"]["code"] == "coupon_expired"
    assert engine_api.count(Coupon, Coupon.status == "redeemed") == 0


def test_unknown_code_and_wrong_store_get_the_same_answer(engine_api: Engine) -> None:
    store = engine_api.create_store()
    other = engine_api.create_store(lon=INSIDE[0] + 0.05, name="Other")
    engine_api.create_campaign([store["id"]])
    coupon = engine_api.ping(engine_api.shopper(), INSIDE).json()["coupons"][0]
    wrong_store = engine_api.redeem(coupon["code"], other["id"])
    unknown = engine_api.redeem("ZZZZZ-ZZZZZ", store["id"])
    assert wrong_store.status_code == unknown.status_code == 404
    assert wrong_store.json() == unknown.json()
    assert engine_api.redeem(coupon["code"], store["id"]).status_code == 200


def test_ping_without_location_consent_is_refused_and_nothing_is_stored(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    shopper = engine_api.shopper(location=False)
    refused = engine_api.ping(shopper, INSIDE)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "consent_required"
    assert "location_tracking" in refused.json()["error"]["message"]
    assert engine_api.count(Ping) == 0
    assert engine_api.count(FenceEvent) == 0
    assert engine_api.count(Coupon) == 0


def test_withdrawn_location_consent_stops_the_very_next_ping(engine_api: Engine) -> None:
    store = engine_api.create_store()
    shopper = engine_api.shopper()
    assert engine_api.ping(shopper, OUTSIDE).status_code == 200
    engine_api.consent(shopper, "location_tracking", granted=False)
    engine_api.clock.advance(timedelta(seconds=10))
    refused = engine_api.ping(shopper, INSIDE)
    assert refused.status_code == 403
    assert "withdrawn" in refused.json()["error"]["message"]
    assert engine_api.count(Ping) == 1
    assert engine_api.count(FenceEvent, FenceEvent.store_id == store["id"]) == 0


def test_no_coupon_without_marketing_consent(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    shopper = engine_api.shopper(offers_by_email=False)
    body = engine_api.ping(shopper, INSIDE).json()
    assert [e["kind"] for e in body["events"]] == ["enter"]
    assert body["coupons"] == []
    assert engine_api.count(Coupon) == 0 and engine_api.count(Delivery) == 0


def test_daily_cap_stops_a_second_coupon_on_reentry(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], cap=1)
    shopper = engine_api.shopper()
    assert len(engine_api.ping(shopper, INSIDE).json()["coupons"]) == 1
    engine_api.clock.advance(timedelta(minutes=1))
    assert engine_api.ping(shopper, OUTSIDE).json()["events"] == []  # one fix out is not an exit
    engine_api.clock.advance(timedelta(seconds=20))
    [exit_event] = engine_api.ping(shopper, OUTSIDE).json()["events"]
    assert exit_event["kind"] == "exit" and exit_event["details"]["duration_s"] == 60
    engine_api.clock.advance(timedelta(minutes=1))
    again = engine_api.ping(shopper, INSIDE).json()
    assert [e["kind"] for e in again["events"]] == ["enter"]
    assert again["coupons"] == []
    assert engine_api.count(Coupon) == 1


def test_consent_events_are_recorded_with_evidence(engine_api: Engine) -> None:
    shopper = engine_api.register()
    engine_api.client.headers["User-Agent"] = "shop-app/3.1"
    given = engine_api.consent(shopper, "location_tracking")
    withdrawn = engine_api.consent(shopper, "location_tracking", granted=False)
    assert (given["state"], withdrawn["state"]) == ("given", "withdrawn")
    assert given["event_hash"] != withdrawn["event_hash"]
    with engine_api.runtime.sessions() as session:
        events = session.query(ConsentEvent).order_by(ConsentEvent.id).all()
        key = session.get(SubjectKey, events[0].subject_id)
    assert [e.state for e in events] == ["given", "withdrawn"]
    assert key is not None
    sealer = engine_api.runtime.ledger_config.sealer
    evidence = sealer.open(key.wrapped_key, events[0].evidence_sealed)
    assert evidence is not None and evidence["user_agent"] == "shop-app/3.1"
    assert "shop-app" not in events[0].evidence_sealed  # sealed at rest
    assert events[1].prev_hash == events[0].entry_hash
    assert events[0].method == "sdk" and events[0].notice_version == "n-1"
    current = engine_api.client.get("/v1/sdk/consents", headers=shopper["auth"]).json()
    assert [(c["purpose"], c["state"]) for c in current] == [("location_tracking", "withdrawn")]


def test_offers_inbox_lists_live_coupons_only(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], valid_minutes=10)
    shopper = engine_api.shopper()
    coupon = engine_api.ping(shopper, INSIDE).json()["coupons"][0]
    engine_api.clock.advance(timedelta(minutes=4))
    [live] = engine_api.client.get("/v1/sdk/offers", headers=shopper["auth"]).json()
    assert live["code"] == coupon["code"] and live["remaining_s"] == 6 * 60
    engine_api.clock.advance(timedelta(minutes=6))
    assert engine_api.client.get("/v1/sdk/offers", headers=shopper["auth"]).json() == []
