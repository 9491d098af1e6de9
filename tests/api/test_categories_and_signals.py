"""Offer categories chosen by the shopper, and privacy signals on SDK requests."""

from __future__ import annotations

from datetime import timedelta

from consent.models import ConsentReceipt
from geo.models import Ping
from tests.api.conftest import INSIDE, OUTSIDE, Engine


def _prefer(engine: Engine, shopper: dict[str, object], categories: list[str] | None) -> None:
    response = engine.client.put(
        "/v1/sdk/preferences",
        headers=shopper["auth"],  # type: ignore[arg-type]
        json={"categories": categories},
    )
    assert response.status_code == 200, response.text


def test_a_categorised_offer_reaches_only_shoppers_who_chose_it(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], category="books")
    books = engine_api.shopper(customer="reader", email="reader@example.com")
    coffee = engine_api.shopper(customer="drinker", email="drinker@example.com")
    anything = engine_api.shopper(customer="open", email="open@example.com")
    _prefer(engine_api, books, ["books", "shoes"])
    _prefer(engine_api, coffee, ["coffee"])
    got = {
        name: len(engine_api.ping(s, INSIDE).json()["coupons"])
        for name, s in (("books", books), ("coffee", coffee), ("anything", anything))
    }
    assert got == {"books": 1, "coffee": 0, "anything": 1}


def test_a_general_offer_reaches_a_shopper_with_categories(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])  # no category
    shopper = engine_api.shopper()
    _prefer(engine_api, shopper, ["coffee"])
    assert len(engine_api.ping(shopper, INSIDE).json()["coupons"]) == 1


def test_global_privacy_control_stops_location_processing(engine_api: Engine) -> None:
    shopper = engine_api.shopper()
    fix = {"lon": OUTSIDE[0], "lat": OUTSIDE[1], "recorded_at": engine_api.clock.now().isoformat()}
    for header in ({"Sec-GPC": "1"}, {"X-Limit-Precise-Location": "1"}):
        refused = engine_api.client.post(
            "/v1/sdk/pings", headers={**shopper["auth"], **header}, json={"pings": [fix]}
        )
        assert refused.status_code == 403, refused.text
        assert "precise location is not processed" in refused.json()["error"]["message"]
    assert engine_api.count(Ping) == 0
    assert (
        engine_api.count(
            ConsentReceipt, ConsentReceipt.action == "ping", ConsentReceipt.allowed.is_(False)
        )
        == 2
    )
    engine_api.clock.advance(timedelta(seconds=5))
    assert engine_api.ping(shopper, OUTSIDE).status_code == 200  # without the signal: processed
