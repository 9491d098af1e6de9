"""Email double opt-in and RFC 8058 one-click unsubscribe, through real SMTP-delivered mail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from consent.domain import Channel
from consent.models import ConsentEvent, SubjectKey
from consent.optin import ConsentLinks, confirmed_address
from offers.models import Coupon, Delivery
from tests.api.conftest import INSIDE, OUTSIDE, Engine, EngineFactory
from tests.conftest import text_of

HTML = {"Accept": "text/html,application/xhtml+xml"}


def _events(engine: Engine, subject_id: str) -> list[ConsentEvent]:
    with engine.runtime.sessions() as session:
        return list(
            session.scalars(
                select(ConsentEvent)
                .where(ConsentEvent.subject_id == subject_id)
                .order_by(ConsentEvent.id)
            )
        )


def _evidence(engine: Engine, event: ConsentEvent) -> dict[str, Any]:
    with engine.runtime.sessions() as session:
        key = session.get(SubjectKey, event.subject_id)
    assert key is not None
    opened = engine.runtime.ledger_config.sealer.open(key.wrapped_key, event.evidence_sealed)
    assert opened is not None
    return opened


def _error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


def _walk_out_and_back_in(engine: Engine, shopper: dict[str, Any]) -> dict[str, Any]:
    engine.clock.advance(timedelta(seconds=30))
    engine.ping(shopper, OUTSIDE)
    engine.clock.advance(timedelta(seconds=70))
    engine.ping(shopper, OUTSIDE)
    engine.clock.advance(timedelta(seconds=10))
    return dict(engine.ping(shopper, INSIDE).json())


def test_offers_by_email_wait_for_the_link_in_the_confirmation_email(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]], cap=5)
    shopper = engine.register(email="new@example.com")
    engine.consent(shopper, "location_tracking")
    pending = engine.consent(shopper, "marketing_offers", channel="email")
    assert pending["state"] == "pending_confirmation" and pending["valid_until"] is None

    [mail] = engine.inbox.wait_for(1)
    assert mail["To"] == "new@example.com" and mail["X-Offer-Engine-Kind"] == "consent-confirmation"
    body = engine.ping(shopper, INSIDE).json()
    assert [e["kind"] for e in body["events"]] == ["enter"]
    assert body["coupons"] == []  # pending is not consent
    assert engine.count(Coupon) == 0

    engine.client.headers["User-Agent"] = "mail-app/2.0"
    page = engine.follow(engine.confirmation_link("new@example.com"), headers=HTML)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "confirmed" in page.text
    *_, confirmed = _events(engine, shopper["subject_id"])
    assert (confirmed.state, confirmed.method) == ("confirmed", "email_link")
    assert confirmed.valid_until is not None
    evidence = _evidence(engine, confirmed)
    assert evidence["user_agent"] == "mail-app/2.0" and evidence["ip"]
    assert evidence["confirms_event_id"] == pending["event_id"]

    again = _walk_out_and_back_in(engine, shopper)
    [coupon] = again["coupons"]
    assert coupon["channels"] == ["email"]
    with engine.runtime.sessions() as session:
        [delivery] = session.scalars(select(Delivery)).all()
    report = engine.runtime.worker.deliver(delivery.id)
    assert report is not None and report.status == "sent"
    [offer_mail] = engine.inbox.wait_for(1)
    assert coupon["code"] in text_of(offer_mail)


def test_a_confirmation_link_works_once_and_bad_links_record_nothing(engine_api: Engine) -> None:
    shopper = engine_api.register(email="twice@example.com")
    engine_api.consent(shopper, "marketing_offers", channel="email")
    link = engine_api.confirmation_link("twice@example.com")
    assert engine_api.follow(link).json()["recorded"] is True
    before = engine_api.count(ConsentEvent)

    again = engine_api.follow(link)
    assert again.status_code == 200 and again.json()["recorded"] is False
    assert again.json()["state"] == "confirmed"

    tampered = link[:-4] + ("AAAA" if not link.endswith("AAAA") else "BBBB")
    assert "not valid" in _error(engine_api.follow(tampered), 400, "invalid_link")
    page = engine_api.follow(tampered, headers=HTML)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert "not valid" in page.text
    no_token = engine_api.client.get("/v1/consent/confirm")
    assert "no token" in _error(no_token, 400, "invalid_link")
    too_long = engine_api.client.get("/v1/consent/confirm", params={"token": "x" * 5000})
    _error(too_long, 422, "invalid_request")
    unsubscribe_token = engine_api.runtime.links.unsubscribe_url(
        shopper["subject_id"], Channel.EMAIL, engine_api.clock.now()
    )
    wrong_kind = engine_api.follow(unsubscribe_token.replace("/unsubscribe", "/confirm"))
    _error(wrong_kind, 400, "invalid_link")
    forged = ConsentLinks("another-secret-of-at-least-32-characters", "http://x")
    forged_link, _ = forged.confirm_url(shopper["subject_id"], 999, engine_api.clock.now())
    _error(engine_api.follow(forged_link), 400, "invalid_link")
    assert engine_api.count(ConsentEvent) == before


def test_an_expired_or_superseded_link_is_refused(engine_api: Engine) -> None:
    shopper = engine_api.register(email="late@example.com")
    engine_api.consent(shopper, "marketing_offers", channel="email")
    old = engine_api.confirmation_link("late@example.com")
    engine_api.clock.advance(timedelta(hours=48, seconds=1))
    assert "expired" in _error(engine_api.follow(old), 410, "link_expired")

    engine_api.consent(shopper, "marketing_offers", channel="email")  # asks again
    first = engine_api.confirmation_link("late@example.com")
    engine_api.consent(shopper, "marketing_offers", channel="email")
    second = engine_api.confirmation_link("late@example.com")
    assert "newer" in _error(engine_api.follow(first), 409, "link_superseded")
    engine_api.consent(shopper, "marketing_offers", granted=False, channel="email")
    assert "withdrawn" in _error(engine_api.follow(second), 409, "link_superseded")
    states = [e.state for e in _events(engine_api, shopper["subject_id"])]
    assert "confirmed" not in states
    assert states[-1] == "withdrawn"


def test_offers_by_email_need_an_address(engine_api: Engine) -> None:
    shopper = engine_api.register(email=None)
    response = engine_api.client.post(
        "/v1/sdk/consents",
        headers=shopper["auth"],
        json={
            "purpose": "marketing_offers",
            "channel": "email",
            "granted": True,
            "notice_version": "n-1",
        },
    )
    assert "email address" in _error(response, 422, "email_required")
    assert engine_api.count(ConsentEvent) == 0


def test_one_click_unsubscribe_from_a_delivered_offer_email(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    engine.create_campaign([store["id"]])  # a second offer at the same store
    shopper = engine.shopper(email="leaving@example.com")
    coupons = engine.ping(shopper, INSIDE).json()["coupons"]
    assert len(coupons) == 2
    with engine.runtime.sessions() as session:
        first, second = session.scalars(select(Delivery).order_by(Delivery.id)).all()

    sent = engine.runtime.worker.deliver(first.id)
    assert sent is not None and sent.status == "sent"
    [mail] = engine.inbox.wait_for(1)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = mail["List-Unsubscribe"]
    assert header.startswith("<") and header.endswith(">")
    url = header[1:-1]
    assert url.startswith(engine.runtime.settings.public_base_url + "/v1/consent/unsubscribe?")
    assert url in text_of(mail)

    page = engine.follow(url, headers=HTML)  # a person opening the link: a button, no change
    assert page.status_code == 200 and "<form method='post'" in page.text
    assert "List-Unsubscribe" in page.text and "One-Click" in page.text
    events_before = engine.count(ConsentEvent)
    engine.client.headers["User-Agent"] = "mailbox-provider/1.0"
    done = engine.follow(url, "POST", data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.json()["recorded"]) == ("withdrawn", True)
    assert engine.count(ConsentEvent) == events_before + 1
    withdrawal = _events(engine, shopper["subject_id"])[-1]
    assert (withdrawal.purpose, withdrawal.channel) == ("marketing_offers", "email")
    assert (withdrawal.state, withdrawal.method) == ("withdrawn", "email_link")
    evidence = _evidence(engine, withdrawal)
    assert evidence["user_agent"] == "mailbox-provider/1.0"
    assert evidence["via"] == "List-Unsubscribe one-click"

    refused = engine.runtime.worker.deliver(second.id)
    assert refused is not None and refused.status == "no_consent"
    assert len(engine.inbox.messages) == 1

    again = engine.follow(url, "POST", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and again.json()["recorded"] is False
    assert engine.count(ConsentEvent) == events_before + 1


def test_unsubscribe_refuses_a_wrong_body_or_token(engine_api: Engine) -> None:
    shopper = engine_api.shopper(email="strict@example.com")
    url = engine_api.runtime.links.unsubscribe_url(
        shopper["subject_id"], Channel.EMAIL, engine_api.clock.now()
    )
    before = engine_api.count(ConsentEvent)
    no_body = engine_api.follow(url, "POST")
    assert "List-Unsubscribe=One-Click" in _error(no_body, 400, "invalid_request")
    other = engine_api.follow(url, "POST", data={"List-Unsubscribe": "yes"})
    _error(other, 400, "invalid_request")
    as_json = engine_api.follow(url, "POST", json={"List-Unsubscribe": "One-Click"})
    _error(as_json, 400, "invalid_request")
    broken = engine_api.follow(url[:-3], "POST", data={"List-Unsubscribe": "One-Click"})
    _error(broken, 400, "invalid_link")
    page = engine_api.follow(url[:-3], headers=HTML)
    assert page.status_code == 400 and "not valid" in page.text
    no_token = engine_api.client.post(
        "/v1/consent/unsubscribe", data={"List-Unsubscribe": "One-Click"}
    )
    _error(no_token, 400, "invalid_link")
    assert engine_api.count(ConsentEvent) == before


def test_offer_email_goes_only_to_the_address_the_shopper_confirmed(
    make_engine_api: EngineFactory,
) -> None:
    """The opt-in is for the address the confirmation link went to. A second device of the same
    shopper, registered with another address that nobody confirmed, triggers an offer: the email
    goes to the confirmed address, never to the other."""
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    engine.shopper(email="confirmed@example.com", customer="cust-7")
    other = engine.register(email="never-confirmed@example.com", customer="cust-7")

    [coupon] = engine.ping(other, INSIDE).json()["coupons"]
    with engine.runtime.sessions() as session:
        [delivery] = session.scalars(select(Delivery)).all()
    report = engine.runtime.worker.deliver(delivery.id)

    assert report is not None and report.status == "sent", report
    [mail] = engine.inbox.wait_for(1)
    assert mail["To"] == "confirmed@example.com"
    assert coupon["code"] in text_of(mail)
    with engine.runtime.sessions() as session:
        assert session.get(Delivery, delivery.id).address == "confirmed@example.com"  # type: ignore[union-attr]


def test_the_confirmed_address_is_read_only_from_a_confirmation_of_that_subject(
    engine_api: Engine,
) -> None:
    """Fail closed: an entry that is not a confirmation (the location grant), another
    subject's, or none at all gives no address, so the delivery is refused."""
    shopper = engine_api.shopper(email="someone@example.com")
    location = next(e for e in _events(engine_api, shopper["subject_id"]) if e.channel == "")
    confirmation = _events(engine_api, shopper["subject_id"])[-1]
    sealer = engine_api.runtime.ledger_config.sealer

    with engine_api.runtime.sessions() as session:
        right = confirmed_address(session, sealer, shopper["subject_id"], confirmation.id)
        wrong = confirmed_address(session, sealer, shopper["subject_id"], location.id)
        other = confirmed_address(session, sealer, "sub-nobody", confirmation.id)
        none = confirmed_address(session, sealer, shopper["subject_id"], None)

    assert (right, wrong, other, none) == ("someone@example.com", None, None, None)
