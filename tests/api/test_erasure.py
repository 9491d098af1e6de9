"""Erasure (GDPR Art. 17): the subject's personal data goes, the ledger proves consent ended and
still verifies, and the subject receives nothing more."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from api.auth import read_device_token
from consent import erasure
from consent.domain import GENESIS_HASH, Channel, chain_hash
from consent.ledger import event_fields
from consent.models import (
    ConsentEvent,
    ConsentState,
    Device,
    Preferences,
    Subject,
    SubjectKey,
)
from core.audit import AuditEntry
from core.settings import INSECURE_KEYS
from core.state import device_lock
from geo.models import FenceEvent, Ping
from offers.models import Coupon, Delivery
from tests.api.conftest import INSIDE, OUTSIDE, Engine, EngineFactory

COMPLIANCE = {"X-API-Key": INSECURE_KEYS["compliance"]}


def _erase(engine: Engine, subject_id: str, **params: Any) -> Any:
    return engine.client.delete(
        f"/v1/compliance/subjects/{subject_id}", headers=COMPLIANCE, params=params
    )


def _chain_verifies(engine: Engine) -> bool:
    with engine.runtime.sessions() as session:
        events = session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)).all()
    previous = GENESIS_HASH
    for event in events:
        if event.prev_hash != previous or event.entry_hash != chain_hash(
            previous, event_fields(event)
        ):
            return False
        previous = event.entry_hash
    return True


def test_erasure_removes_personal_data_and_the_ledger_proves_consent_ended(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(run_scheduler=False)
    store = engine.create_store()
    engine.create_campaign([store["id"]])
    other = engine.shopper(email="other@example.com", customer="cust-2")
    shopper = engine.shopper(email="gone@example.com", customer="cust-1")
    subject_id = shopper["subject_id"]
    prefs = {"max_offers_per_day": 3, "timezone": "Europe/Helsinki"}
    engine.client.put("/v1/sdk/preferences", headers=shopper["auth"], json=prefs)
    engine.ping(shopper, OUTSIDE)
    engine.clock.advance(timedelta(seconds=30))
    [coupon] = engine.ping(shopper, INSIDE).json()["coupons"]
    assert engine.ping(other, INSIDE).status_code == 200
    with engine.runtime.sessions() as session:
        pending = session.scalar(
            select(Delivery).join(Coupon).where(Coupon.subject_id == subject_id)
        )
        assert pending is not None and pending.status == "pending"
        key = session.get(SubjectKey, subject_id)
        assert key is not None
        sealed = session.scalars(
            select(ConsentEvent.evidence_sealed).where(ConsentEvent.subject_id == subject_id)
        ).first()
    assert sealed is not None
    assert engine.runtime.ledger_config.sealer.open(key.wrapped_key, sealed) is not None
    assert engine.runtime.state.load_presence([shopper["device_id"]])
    events_before = engine.count(ConsentEvent)

    response = _erase(engine, subject_id, reference="DSR-2026-0042")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["already_erased"] is False and report["evidence_shredded"] is True
    assert report["erased"] == {
        "offer_decisions_unlinked": 1,
        "pings": 2,
        "fence_events": 1,
        "deliveries_dropped": 1,
        "delivery_addresses_scrubbed": 1,
        "devices_scrubbed": 1,
        "preferences": 1,
    }
    assert len(report["ledger_event_ids"]) == 2  # location_tracking, marketing_offers/email

    with engine.runtime.sessions() as session:
        subject = session.get(Subject, subject_id)
        assert subject is not None and subject.erased_at == engine.clock.now()
        assert subject.external_ref != "cust-1"
        device = session.get(Device, shopper["device_id"])
        assert device is not None and (device.email, device.push_token) == (None, None)
        assert session.get(SubjectKey, subject_id) is None
        assert session.get(Preferences, subject_id) is None
        ended = session.scalars(
            select(ConsentEvent).where(ConsentEvent.id.in_(report["ledger_event_ids"]))
        ).all()
        assert {(e.purpose, e.channel, e.state, e.method) for e in ended} == {
            ("location_tracking", "", "invalidated", "api"),
            ("marketing_offers", "email", "invalidated", "api"),
        }
        states = session.scalars(
            select(ConsentState.state).where(ConsentState.subject_id == subject_id)
        ).all()
        assert set(states) == {"invalidated"}
        dropped = session.get(Delivery, pending.id)
        assert dropped is not None
        assert (dropped.status, dropped.address) == ("no_consent", "[erased]")
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.target == subject_id)).all()
        assert entry.action == "subject.erased" and entry.details["reference"] == "DSR-2026-0042"
        other_deliveries = session.scalars(
            select(Delivery).join(Coupon).where(Coupon.subject_id == other["subject_id"])
        ).all()
    assert engine.count(Ping, Ping.subject_id == subject_id) == 0
    assert engine.count(FenceEvent, FenceEvent.subject_id == subject_id) == 0
    assert engine.count(Ping, Ping.subject_id == other["subject_id"]) == 1  # others untouched
    assert [d.status for d in other_deliveries] == ["pending"]
    assert engine.count(Coupon, Coupon.id == coupon["coupon_id"]) == 1  # kept for accounts
    assert engine.count(ConsentEvent) == events_before + 2
    assert engine.runtime.ledger_config.sealer.open(None, sealed) is None  # shredded
    assert _chain_verifies(engine)
    assert engine.runtime.state.load_presence([shopper["device_id"]]) == {}

    # Nothing more reaches the subject.
    assert engine.runtime.worker.deliver(pending.id) is None
    assert engine.inbox.messages == []
    assert engine.ping(shopper, INSIDE).status_code == 401
    assert engine.client.get("/v1/sdk/offers", headers=shopper["auth"]).status_code == 401
    consent = engine.client.post(
        "/v1/sdk/consents",
        headers=shopper["auth"],
        json={"purpose": "location_tracking", "granted": True, "notice_version": "n-1"},
    )
    assert consent.status_code == 401
    again = _erase(engine, subject_id)
    assert again.status_code == 200 and again.json()["already_erased"] is True
    assert engine.count(ConsentEvent) == events_before + 2
    # The same app user signing up again is a new, unlinked subject.
    fresh = engine.register(email="gone@example.com", customer="cust-1")
    assert fresh["subject_id"] != subject_id


def test_links_in_old_emails_do_nothing_after_erasure(engine_api: Engine) -> None:
    shopper = engine_api.register(email="old@example.com")
    engine_api.consent(shopper, "marketing_offers", channel="email")
    link = engine_api.confirmation_link("old@example.com")
    unsubscribe = engine_api.runtime.links.unsubscribe_url(
        shopper["subject_id"], Channel.EMAIL, engine_api.clock.now()
    )
    assert _erase(engine_api, shopper["subject_id"]).status_code == 200
    before = engine_api.count(ConsentEvent)
    refused = engine_api.follow(link)
    assert refused.status_code == 410 and refused.json()["error"]["code"] == "subject_erased"
    done = engine_api.follow(unsubscribe, "POST", data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and done.json()["recorded"] is False
    assert engine_api.count(ConsentEvent) == before
    with engine_api.runtime.sessions() as session:
        assert session.get(SubjectKey, shopper["subject_id"]) is None  # no key re-created


def test_erasure_needs_the_compliance_key_and_a_known_subject(engine_api: Engine) -> None:
    shopper = engine_api.register()
    no_key = engine_api.client.delete(f"/v1/compliance/subjects/{shopper['subject_id']}")
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "unauthenticated"
    wrong_role = engine_api.client.delete(
        f"/v1/compliance/subjects/{shopper['subject_id']}",
        headers={"X-API-Key": INSECURE_KEYS["manager"]},
    )
    assert wrong_role.status_code == 401
    unknown = _erase(engine_api, "sub_nobody")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    too_long = _erase(engine_api, "s" * 41)
    assert too_long.status_code == 422 and too_long.json()["error"]["code"] == "invalid_request"
    long_reference = _erase(engine_api, shopper["subject_id"], reference="r" * 201)
    assert long_reference.status_code == 422
    with engine_api.runtime.sessions() as session:
        subject = session.get(Subject, shopper["subject_id"])
        assert subject is not None and subject.erased_at is None


def _device_lock_of(engine: Engine, shopper: dict[str, Any]) -> str:
    claims = read_device_token(engine.runtime.settings, shopper["token"], engine.clock.now())
    return device_lock(claims.device_id)


def test_erasure_waits_for_a_ping_of_the_subject_still_being_processed(
    engine_api: Engine,
) -> None:
    """A ping group of another process holds the device (its fixes not yet committed): the
    erasure waits for it, so those fixes are erased too, and holds the device until it has
    committed, so a ping sent meanwhile meets the revoked token."""
    engine_api.create_store()
    shopper = engine_api.shopper(offers_by_email=False, email="busy@example.com", customer="b-1")
    assert engine_api.ping(shopper, OUTSIDE).status_code == 200
    state, lock = engine_api.runtime.state, _device_lock_of(engine_api, shopper)
    assert state.acquire_lock(lock, "ping-in-another-process", 30)
    release = threading.Timer(0.3, lambda: state.release_lock(lock, "ping-in-another-process"))
    started = time.monotonic()
    release.start()
    try:
        erased = _erase(engine_api, shopper["subject_id"])
    finally:
        release.join()

    assert erased.status_code == 200, erased.text
    assert time.monotonic() - started >= 0.3
    assert state.acquire_lock(lock, "next", 30), "the erasure let go of the device"
    assert state.release_lock(lock, "next")
    assert engine_api.ping(shopper, INSIDE).status_code == 401
    assert engine_api.count(Ping, Ping.subject_id == shopper["subject_id"]) == 0


def test_erasure_refuses_with_503_while_a_ping_holds_on_and_changes_nothing(
    engine_api: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(erasure, "DEVICE_WAIT_S", 0.2)
    shopper = engine_api.shopper(offers_by_email=False, email="stuck@example.com", customer="s-1")
    state, lock = engine_api.runtime.state, _device_lock_of(engine_api, shopper)
    assert state.acquire_lock(lock, "ping-in-another-process", 30)

    refused = _erase(engine_api, shopper["subject_id"])

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "unavailable"
    with engine_api.runtime.sessions() as session:
        subject = session.get(Subject, shopper["subject_id"])
        assert subject is not None and subject.erased_at is None
    assert state.release_lock(lock, "ping-in-another-process"), "not taken from its holder"
    assert _erase(engine_api, shopper["subject_id"]).status_code == 200
