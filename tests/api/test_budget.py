"""Campaign budgets on both stacks: a maximum number of coupons and a maximum liability
(discounts of coupons not expired), reserved at issue, released once on expiry or void; and the
manager API's validation of the new campaign fields."""

from __future__ import annotations

from datetime import timedelta

from offers.models import Coupon
from tests.api.conftest import INSIDE, MANAGER, Engine
from tests.api.coupon_helpers import budget_row, campaign, quick_shopper, reenter, till

DISCOUNT = {"discount_amount": 300, "valid_minutes": 5}


def test_a_coupon_budget_stops_issuing_at_its_maximum(engine_api: Engine) -> None:
    store = engine_api.create_store()
    capped = campaign(engine_api, [store["id"]], max_coupons=2)
    results = [engine_api.ping(quick_shopper(engine_api, f"c{i}"), INSIDE).json() for i in range(3)]
    assert [len(r["coupons"]) for r in results] == [1, 1, 0]
    assert results[2]["events"][0]["reason"] == "budget_coupons_exhausted"
    assert budget_row(engine_api, capped["id"]) == (2, 0)
    listed = engine_api.client.get("/v1/manager/campaigns", headers=MANAGER).json()
    assert listed["items"][0]["budget"] == {
        "max_coupons": 2,
        "max_liability": None,
        "issued_count": 2,
        "reserved_liability": 0,
    }


def test_liability_is_reserved_at_issue_and_released_once_on_expiry(engine_api: Engine) -> None:
    store = engine_api.create_store()
    budgeted = campaign(engine_api, [store["id"]], offer=DISCOUNT, max_liability=500)
    first, second = quick_shopper(engine_api, "c1"), quick_shopper(engine_api, "c2")
    assert len(engine_api.ping(first, INSIDE).json()["coupons"]) == 1
    assert budget_row(engine_api, budgeted["id"]) == (1, 300)
    refused = engine_api.ping(second, INSIDE).json()
    assert refused["coupons"] == []
    assert refused["events"][0]["reason"] == "budget_liability_exhausted"

    expiry = engine_api.runtime.expiry
    assert expiry is not None
    engine_api.clock.advance(timedelta(minutes=5))  # expired, but the till's grace still runs
    assert expiry.expire_due().expired == 0
    engine_api.clock.advance(timedelta(seconds=engine_api.runtime.settings.redemption_grace_s))
    done = expiry.expire_due()
    assert (done.expired, done.released) == (1, 300)
    assert expiry.expire_due().expired == 0  # once only
    assert budget_row(engine_api, budgeted["id"]) == (1, 0)
    assert engine_api.count(Coupon, Coupon.status == "expired") == 1

    again = reenter(engine_api, second, timedelta(minutes=1))
    assert len(again["coupons"]) == 1
    assert budget_row(engine_api, budgeted["id"]) == (2, 300)


def test_the_scheduler_runs_the_expiry_transition(engine_api: Engine) -> None:
    store = engine_api.create_store()
    budgeted = campaign(engine_api, [store["id"]], offer=DISCOUNT, max_liability=1000)
    engine_api.ping(quick_shopper(engine_api, "c1"), INSIDE)
    engine_api.clock.advance(timedelta(minutes=6))
    engine_api.runtime.scheduler.tick()  # renew the lease at the moved clock
    engine_api.runtime.scheduler.expire()
    assert engine_api.count(Coupon, Coupon.status == "expired") == 1
    assert budget_row(engine_api, budgeted["id"]) == (1, 0)


def test_voiding_a_redemption_after_expiry_releases_the_liability(engine_api: Engine) -> None:
    store = engine_api.create_store()
    budgeted = campaign(engine_api, [store["id"]], offer=DISCOUNT, max_liability=1000)
    [coupon] = engine_api.ping(quick_shopper(engine_api, "c1"), INSIDE).json()["coupons"]
    engine_api.clock.advance(timedelta(minutes=4))
    assert till(engine_api, "redemptions", coupon["code"], store["id"]).status_code == 200
    assert budget_row(engine_api, budgeted["id"]) == (1, 300)  # a redeemed coupon still costs
    engine_api.clock.advance(timedelta(minutes=2))  # past expiry and grace, inside the void window
    voided = till(engine_api, "voids", coupon["code"], store["id"])
    assert voided.status_code == 200, voided.text
    assert voided.json()["status"] == "expired"
    assert budget_row(engine_api, budgeted["id"]) == (1, 0)
    expiry = engine_api.runtime.expiry
    assert expiry is not None and expiry.expire_due().released == 0  # not released twice


def test_a_budget_set_on_a_running_campaign_counts_what_it_issued(engine_api: Engine) -> None:
    store = engine_api.create_store()
    running = campaign(engine_api, [store["id"]], offer=DISCOUNT)
    for i in range(2):
        engine_api.ping(quick_shopper(engine_api, f"c{i}"), INSIDE)
    patched = engine_api.client.patch(
        f"/v1/manager/campaigns/{running['id']}/rules",
        headers=MANAGER,
        json={"max_coupons": 3, "max_liability": 10_000, "store_cooldown_minutes": 15},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["budget"]["issued_count"] == 2
    assert patched.json()["budget"]["reserved_liability"] == 600
    assert patched.json()["store_cooldown_minutes"] == 15
    results = [engine_api.ping(quick_shopper(engine_api, f"d{i}"), INSIDE).json() for i in range(2)]
    assert [len(r["coupons"]) for r in results] == [1, 0]
    missing = engine_api.client.patch(
        "/v1/manager/campaigns/cmp_nope/rules", headers=MANAGER, json={"max_coupons": 3}
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "campaign_not_found"


def _refused(engine: Engine, store_id: str, offer: dict[str, object], **rules: object) -> str:
    body = {
        "name": "Bad",
        "store_ids": [store_id],
        "offer": {"title": "t", "body": "b", "discount_text": "d", "valid_minutes": 10, **offer},
        **rules,
    }
    response = engine.client.post("/v1/manager/campaigns", headers=MANAGER, json=body)
    assert response.status_code == 422, response.text
    return str(response.json()["error"]["message"])


def test_the_new_campaign_fields_are_validated_with_clear_messages(engine_api: Engine) -> None:
    store_id = engine_api.create_store()["id"]
    assert "max_valid_minutes" in _refused(engine_api, store_id, {"validity_rule": "travel"})
    assert "decision window" in _refused(
        engine_api,
        store_id,
        {"validity_rule": "travel", "decision_window_minutes": 30, "max_valid_minutes": 20},
    )
    assert "validity_rule" in _refused(engine_api, store_id, {"validity_rule": "forever"})
    assert "discount_amount" in _refused(engine_api, store_id, {}, max_liability=1000)
    assert "discount_amount" in _refused(engine_api, store_id, {"discount_amount": -1})
    assert "max_coupons" in _refused(engine_api, store_id, {}, max_coupons=0)
    assert "store_cooldown_minutes" in _refused(engine_api, store_id, {}, store_cooldown_minutes=-5)
    assert "ends_at must be after starts_at" in _refused(
        engine_api,
        store_id,
        {},
        starts_at="2026-12-02T10:00:00Z",
        ends_at="2026-12-02T09:00:00Z",
    )
    funday = {"funday": [["09:00", "10:00"]]}
    assert "funday" in _refused(engine_api, store_id, {}, active_hours=funday)
    assert "not an" in _refused(engine_api, store_id, {}, active_hours={"mon": [["9am", "10"]]})
