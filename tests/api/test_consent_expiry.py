"""Consent older than ``consent_max_age_days`` (365) stops being consent: pings are refused with
a message that says so, and no offer is issued, until the shopper renews it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from consent.models import ConsentReceipt
from geo.models import Ping
from offers.models import Coupon
from tests.api.conftest import INSIDE, OUTSIDE, Engine, EngineFactory


@pytest.fixture
def engine_api(make_engine_api: EngineFactory) -> Engine:
    """Without the scheduler: deliveries are not what these tests are about, and none is left
    in flight when a test ends."""
    return make_engine_api(run_scheduler=False)


def test_consent_expires_after_a_year_and_stops_pings_and_offers(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], cap=5)
    shopper = engine_api.shopper(customer="yearly")
    assert len(engine_api.ping(shopper, INSIDE).json()["coupons"]) == 1
    consents = engine_api.client.get("/v1/sdk/consents", headers=shopper["auth"]).json()
    valid_until = {c["purpose"]: datetime.fromisoformat(c["valid_until"]) for c in consents}
    assert valid_until["location_tracking"] == engine_api.clock.now() + timedelta(days=365)

    engine_api.clock.advance(timedelta(days=365, minutes=1))
    # The device token (30 days) ran out long ago: the app registers again, same shopper.
    device = engine_api.register(customer="yearly")
    assert device["subject_id"] == shopper["subject_id"]
    pings_before = engine_api.count(Ping)
    refused = engine_api.ping(device, OUTSIDE)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "consent_required"
    assert "location_tracking" in error["message"] and "expired" in error["message"]
    assert "renew" in error["message"]
    assert engine_api.count(Ping) == pings_before

    engine_api.consent(device, "location_tracking")  # renews location only
    engine_api.clock.advance(timedelta(seconds=30))
    body = engine_api.ping(device, INSIDE).json()
    assert [e["kind"] for e in body["events"]] == ["enter"]
    assert body["coupons"] == []
    assert engine_api.count(Coupon) == 1
    with engine_api.runtime.sessions() as session:
        receipt = session.scalar(
            select(ConsentReceipt)
            .where(ConsentReceipt.action == "offer", ConsentReceipt.allowed.is_(False))
            .order_by(ConsentReceipt.id.desc())
        )
    assert receipt is not None and "expired" in receipt.reason
    current = engine_api.client.get("/v1/sdk/consents", headers=device["auth"]).json()
    marketing = next(c for c in current if c["purpose"] == "marketing_offers")
    assert marketing["state"] == "confirmed"  # the record stays; it is just too old to count
    assert datetime.fromisoformat(marketing["valid_until"]) < engine_api.clock.now()
