"""The shopper's preferences over HTTP, and how offers honour them (quiet hours drop, daily
maximum across campaigns)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from consent.models import ConsentReceipt
from offers.models import Coupon, Delivery
from tests.api.conftest import INSIDE, OUTSIDE, Engine, EngineFactory
from tests.conftest import START

# START is 09:00 UTC on a Monday in November: 11:00 in Helsinki (UTC+2).


@pytest.fixture
def engine_api(make_engine_api: EngineFactory) -> Engine:
    """Without the scheduler: deliveries are not what these tests are about, and none is left
    in flight when a test ends."""
    return make_engine_api(run_scheduler=False)


def _put(engine: Engine, shopper: dict[str, Any], **body: Any) -> Any:
    return engine.client.put("/v1/sdk/preferences", headers=shopper["auth"], json=body)


def _reenter(engine: Engine, shopper: dict[str, Any], after: timedelta) -> dict[str, Any]:
    engine.clock.advance(timedelta(seconds=30))  # 550 m: slower than the jump filter's limit
    engine.ping(shopper, OUTSIDE)
    engine.clock.advance(timedelta(seconds=61))
    engine.ping(shopper, OUTSIDE)  # exit confirmed
    engine.clock.advance(after)
    return dict(engine.ping(shopper, INSIDE).json())


def test_preferences_default_then_replace_and_read_back(engine_api: Engine) -> None:
    shopper = engine_api.register()
    empty = engine_api.client.get("/v1/sdk/preferences", headers=shopper["auth"])
    assert empty.status_code == 200
    assert empty.json() == {
        "categories": None,
        "quiet_hours": None,
        "timezone": "UTC",
        "max_offers_per_day": None,
        "updated_at": None,
    }
    saved = _put(
        engine_api,
        shopper,
        categories=["coffee", " books ", "coffee"],
        quiet_hours={"start": "22:00", "end": "07:30"},
        timezone="Europe/Helsinki",
        max_offers_per_day=3,
    )
    assert saved.status_code == 200, saved.text
    read = engine_api.client.get("/v1/sdk/preferences", headers=shopper["auth"]).json()
    assert read == saved.json()
    assert read["categories"] == ["coffee", "books"]
    assert read["quiet_hours"] == {"start": "22:00", "end": "07:30"}
    assert (read["timezone"], read["max_offers_per_day"]) == ("Europe/Helsinki", 3)
    assert read["updated_at"] is not None

    cleared = _put(engine_api, shopper).json()  # a PUT replaces everything
    assert (cleared["categories"], cleared["quiet_hours"], cleared["max_offers_per_day"]) == (
        None,
        None,
        None,
    )


def test_bad_preferences_are_refused_with_the_reason(engine_api: Engine) -> None:
    shopper = engine_api.register()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "7:00", "end": "08:00"}}, "HH:MM"),
        ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "different from their start"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end"),
        ({"timezone": "Mars/Olympus_Mons"}, "unknown IANA time zone"),
        ({"timezone": ""}, "timezone"),
        ({"max_offers_per_day": 0}, "max_offers_per_day"),
        ({"max_offers_per_day": "many"}, "max_offers_per_day"),
        ({"categories": [""]}, "categories.0"),
        ({"categories": ["c"] * 51}, "categories"),
        ({"categories": "coffee"}, "categories"),
        ({"quiet": True}, "quiet"),
    ]
    for body, needle in cases:
        response = _put(engine_api, shopper, **body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert needle in error["message"], (body, error)
    unauthenticated = engine_api.client.put("/v1/sdk/preferences", json={})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "unauthenticated"
    assert (
        engine_api.client.get("/v1/sdk/preferences", headers=shopper["auth"]).json()["updated_at"]
        is None
    )


def test_an_offer_in_quiet_hours_is_dropped_not_deferred(engine_api: Engine) -> None:
    assert START.hour == 9
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], cap=5)
    shopper = engine_api.shopper()
    _put(
        engine_api,
        shopper,
        quiet_hours={"start": "10:30", "end": "12:00"},
        timezone="Europe/Helsinki",
    )

    body = engine_api.ping(shopper, INSIDE).json()  # 11:00 in Helsinki: quiet
    [enter] = body["events"]
    assert (enter["kind"], enter["eligible"], enter["reason"]) == ("enter", False, "quiet_hours")
    assert body["coupons"] == []
    assert engine_api.count(Coupon) == 0 and engine_api.count(Delivery) == 0
    with engine_api.runtime.sessions() as session:
        receipt = session.scalar(
            select(ConsentReceipt).where(ConsentReceipt.subject_ref == enter["id"])
        )
    assert receipt is not None and receipt.allowed  # consent held: the shopper's choice dropped it
    assert receipt.details["dropped"] == "quiet_hours"
    assert receipt.details["quiet_hours"] == "10:30-12:00 Europe/Helsinki"

    engine_api.clock.advance(timedelta(hours=1))  # 12:00 local: quiet hours are over
    assert engine_api.ping(shopper, INSIDE).json()["coupons"] == []  # still inside: nothing owed
    assert engine_api.count(Coupon) == 0
    later = _reenter(engine_api, shopper, timedelta(seconds=10))
    assert len(later["coupons"]) == 1 and later["events"][-1]["eligible"] is True


def test_quiet_hours_over_midnight_leave_the_day_free(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    shopper = engine_api.shopper()
    _put(
        engine_api,
        shopper,
        quiet_hours={"start": "22:00", "end": "07:00"},
        timezone="Europe/Helsinki",
    )
    assert len(engine_api.ping(shopper, INSIDE).json()["coupons"]) == 1


def test_daily_maximum_counts_every_campaign_in_the_shoppers_day(engine_api: Engine) -> None:
    store = engine_api.create_store()
    for _ in range(3):
        engine_api.create_campaign([store["id"]], cap=1)
    shopper = engine_api.shopper()
    _put(engine_api, shopper, max_offers_per_day=2, timezone="Europe/Helsinki")

    first = engine_api.ping(shopper, INSIDE).json()
    assert len(first["coupons"]) == 2  # three live campaigns, two allowed
    again = _reenter(engine_api, shopper, timedelta(minutes=5))
    assert again["coupons"] == []
    assert (again["events"][-1]["eligible"], again["events"][-1]["reason"]) == (
        False,
        "shopper_daily_limit",
    )
    assert engine_api.count(Coupon) == 2

    # The third campaign's count was given back when the shopper's limit stopped it.
    _put(engine_api, shopper, timezone="Europe/Helsinki")
    lifted = _reenter(engine_api, shopper, timedelta(minutes=5))
    assert len(lifted["coupons"]) == 1
    assert engine_api.count(Coupon) == 3


def test_daily_maximum_starts_again_on_the_shoppers_next_day(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], cap=5)
    shopper = engine_api.shopper()
    # Honolulu (UTC-10): START is 23:00 on Sunday there, and an hour later it is Monday.
    _put(engine_api, shopper, max_offers_per_day=1, timezone="Pacific/Honolulu")
    assert len(engine_api.ping(shopper, INSIDE).json()["coupons"]) == 1
    assert _reenter(engine_api, shopper, timedelta(minutes=1))["coupons"] == []
    assert len(_reenter(engine_api, shopper, timedelta(minutes=60))["coupons"]) == 1
