"""Offer eligibility on both stacks: the campaign's schedule and hours, the store open at the
(predicted) arrival, caps per campaign and per shopper day, the store cooldown, and each refusal
recorded with its reason."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import redis

from core.state import RedisHotState
from geo.models import FenceEvent
from offers.models import Coupon
from tests.api.conftest import INSIDE, MANAGER, OUTSIDE, Engine, EngineFactory
from tests.api.coupon_helpers import campaign, decide, quick_shopper, reenter, refusals_of
from tests.conftest import START


def test_a_campaign_not_started_yet_or_ended_refuses_with_the_reason(engine_api: Engine) -> None:
    store = engine_api.create_store()
    later = campaign(engine_api, [store["id"]], starts_at=(START + timedelta(hours=1)).isoformat())
    over = campaign(
        engine_api,
        [store["id"]],
        starts_at=(START - timedelta(days=2)).isoformat(),
        ends_at=(START - timedelta(days=1)).isoformat(),
    )
    body = engine_api.ping(quick_shopper(engine_api, "c1"), INSIDE).json()
    [event] = body["events"]
    assert body["coupons"] == []
    assert event["eligible"] is False
    assert event["reason"] in ("campaign_not_started", "campaign_ended")
    # campaigns made at the same instant come in no particular order
    assert sorted(refusals_of(engine_api, event["id"]), key=lambda r: r["reason"]) == [
        {"campaign_id": over["id"], "reason": "campaign_ended"},
        {"campaign_id": later["id"], "reason": "campaign_not_started"},
    ]


def test_campaign_hours_are_read_in_the_stores_time_zone(engine_api: Engine) -> None:
    assert START.weekday() == 0 and START.hour == 9  # Monday 11:00 in Helsinki
    store = engine_api.create_store()
    campaign(engine_api, [store["id"]], active_hours={"mon": [["11:30", "14:00"]]})
    shopper = quick_shopper(engine_api, "c1")
    first = engine_api.ping(shopper, INSIDE).json()
    assert first["coupons"] == []
    assert first["events"][0]["reason"] == "outside_campaign_hours"
    lunch = reenter(engine_api, shopper, timedelta(minutes=30))  # about 11:32 in Helsinki
    assert len(lunch["coupons"]) == 1 and lunch["events"][-1]["eligible"] is True


def test_the_engines_daily_cap_per_shopper_counts_every_campaign(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(shopper_daily_offer_cap=2)
    store = engine.create_store()
    ids = [campaign(engine, [store["id"]])["id"] for _ in range(3)]
    body = engine.ping(quick_shopper(engine, "c1"), INSIDE).json()
    assert len(body["coupons"]) == 2
    [event] = body["events"]
    assert event["eligible"] is True  # two offers were issued
    [refused] = refusals_of(engine, event["id"])
    assert refused["reason"] == "shopper_daily_limit" and refused["campaign_id"] in ids


def test_the_campaign_cap_counts_the_shoppers_own_day(engine_api: Engine) -> None:
    store = engine_api.create_store()
    campaign(engine_api, [store["id"]], daily_cap_per_shopper=1)
    shopper = quick_shopper(engine_api, "c1")
    prefs = {"timezone": "Europe/Helsinki"}
    put = engine_api.client.put("/v1/sdk/preferences", headers=shopper["auth"], json=prefs)
    assert put.status_code == 200, put.text
    assert len(engine_api.ping(shopper, INSIDE).json()["coupons"]) == 1
    again = reenter(engine_api, shopper, timedelta(minutes=20))
    assert again["coupons"] == []
    assert again["events"][-1]["reason"] == "campaign_daily_cap"
    # The shopper's midnight (Helsinki, UTC+2) is 22:00 UTC: a new day for the cap there.
    engine_api.clock.set(START.replace(hour=21, minute=58))
    assert reenter(engine_api, shopper, timedelta(0))["coupons"] == []
    assert len(reenter(engine_api, shopper, timedelta(minutes=1))["coupons"]) == 1


def test_no_second_coupon_at_the_same_store_within_the_cooldown(engine_api: Engine) -> None:
    store = engine_api.create_store()
    campaign(engine_api, [store["id"]], daily_cap_per_shopper=5, store_cooldown_minutes=30)
    shopper = quick_shopper(engine_api, "c1")
    assert len(engine_api.ping(shopper, INSIDE).json()["coupons"]) == 1
    soon = reenter(engine_api, shopper, timedelta(minutes=10))  # ~11.5 min after the coupon
    assert soon["coupons"] == []
    assert (soon["events"][-1]["eligible"], soon["events"][-1]["reason"]) == (
        False,
        "store_cooldown",
    )
    later = reenter(engine_api, shopper, timedelta(minutes=20))  # ~33 min after it
    assert len(later["coupons"]) == 1
    assert engine_api.count(Coupon) == 2


def test_travel_validity_is_the_eta_plus_the_decision_window_capped(engine_api: Engine) -> None:
    store = engine_api.create_store()
    offer = {"validity_rule": "travel", "decision_window_minutes": 5, "max_valid_minutes": 20}
    campaign(engine_api, [store["id"]], offer=offer, daily_cap_per_shopper=10)
    shopper = quick_shopper(engine_api, "c1")
    now = engine_api.clock.now()

    [near], _ = decide(engine_api, shopper, store, eta_s=420)  # 7 min away
    assert near.expires_at == now + timedelta(minutes=12)
    [far], _ = decide(engine_api, shopper, store, eta_s=3600)  # an hour away: the cap
    assert far.expires_at == now + timedelta(minutes=20)
    # Already there (an enter): just the decision window.
    [there] = engine_api.ping(shopper, INSIDE).json()["coupons"]
    assert there["remaining_s"] == 5 * 60


def test_fixed_validity_ignores_the_eta(engine_api: Engine) -> None:
    store = engine_api.create_store()
    campaign(engine_api, [store["id"]], offer={"valid_minutes": 8})
    [coupon], _ = decide(engine_api, quick_shopper(engine_api, "c1"), store, eta_s=900)
    assert coupon.expires_at == engine_api.clock.now() + timedelta(minutes=8)


def test_a_pass_by_is_refused_when_the_store_closes_before_the_arrival(
    engine_api: Engine,
) -> None:
    response = engine_api.client.post(
        "/v1/manager/stores",
        headers=MANAGER,
        json={
            "name": "Closing soon",
            "timezone": "Europe/Helsinki",
            "opening_hours": {"mon": [["08:00", "11:05"]]},  # 11:00 now in Helsinki
            "fence": {"lon": INSIDE[0], "lat": INSIDE[1], "radius_m": 50},
        },
    )
    assert response.status_code == 201, response.text
    store = response.json()
    campaign(engine_api, [store["id"]], daily_cap_per_shopper=5)
    shopper = quick_shopper(engine_api, "c1")
    refused, event = decide(engine_api, shopper, store, eta_s=600)  # arrives at 11:10
    assert refused == []
    with engine_api.runtime.sessions() as session:
        stored = session.get(FenceEvent, event.id)
        assert stored is not None and (stored.eligible, stored.reason) == (False, "store_closed")
    in_time, _ = decide(engine_api, shopper, store, eta_s=120)  # arrives at 11:02
    assert len(in_time) == 1


def _upload(
    engine: Engine, device: dict[str, Any], fixes: list[tuple[tuple[float, float], datetime]]
) -> dict[str, Any]:
    """One request with fixes taken earlier (a phone that was offline)."""
    pings = [
        {"lon": lon, "lat": lat, "accuracy_m": 10, "recorded_at": at.isoformat()}
        for (lon, lat), at in fixes
    ]
    response = engine.client.post("/v1/sdk/pings", headers=device["auth"], json={"pings": pings})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_visit_uploaded_late_gets_no_exploding_coupon_now(engine_api: Engine) -> None:
    """A phone that was offline uploads its fixes at once: a visit hours ago (over in the same
    batch) or 20 minutes ago (still there) is recorded with the reason, and nothing is issued."""
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    now = engine_api.clock.now()
    left = engine_api.shopper(customer="late-1")
    still = engine_api.shopper(customer="late-2", email="late2@example.com")

    ended = _upload(
        engine_api,
        left,
        [
            (INSIDE, now - timedelta(hours=3)),
            (OUTSIDE, now - timedelta(hours=2)),
            (OUTSIDE, now - timedelta(hours=2) + timedelta(minutes=2)),
            (OUTSIDE, now - timedelta(minutes=1)),
        ],
    )
    old = _upload(engine_api, still, [(INSIDE, now - timedelta(minutes=20))])

    assert [(e["kind"], e["eligible"], e["reason"]) for e in ended["events"]] == [
        ("enter", False, "stale_trigger"),
        ("exit", True, None),
    ]
    assert [(e["kind"], e["eligible"], e["reason"]) for e in old["events"]] == [
        ("enter", False, "stale_trigger")
    ]
    assert ended["coupons"] == old["coupons"] == []
    assert engine_api.count(Coupon) == 0


def test_a_visit_uploaded_within_minutes_while_still_there_gets_its_coupon(
    engine_api: Engine,
) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    now = engine_api.clock.now()
    shopper = engine_api.shopper()

    body = _upload(
        engine_api,
        shopper,
        [(OUTSIDE, now - timedelta(minutes=6)), (INSIDE, now - timedelta(minutes=4))],
    )

    assert [(e["kind"], e["eligible"]) for e in body["events"]] == [("enter", True)]
    assert len(body["coupons"]) == 1


def _lose_hot_state(engine: Engine) -> None:
    """Redis restarted without persistence (or the one process restarted): every counter,
    presence and cooldown in the hot state is gone."""
    state = engine.runtime.state
    if isinstance(state, RedisHotState):
        client = redis.Redis.from_url(str(engine.runtime.settings.redis_url))
        keys = list(client.scan_iter(f"{engine.runtime.settings.redis_key_prefix}*"))
        assert keys, "the bench of this test wrote nothing to Redis"
        client.delete(*keys)
        client.close()
    else:
        state.close()  # the in-process state: emptied


def test_a_lost_hot_state_does_not_reopen_the_campaigns_daily_cap(engine_api: Engine) -> None:
    store = engine_api.create_store()
    campaign(engine_api, [store["id"]], daily_cap_per_shopper=1)
    shopper = quick_shopper(engine_api, "c1")
    assert len(engine_api.ping(shopper, INSIDE).json()["coupons"]) == 1

    _lose_hot_state(engine_api)
    again = reenter(engine_api, shopper, timedelta(minutes=20))

    assert again["coupons"] == []
    assert again["events"][-1]["reason"] == "campaign_daily_cap"
    assert engine_api.count(Coupon) == 1


def test_a_lost_hot_state_does_not_reopen_the_shoppers_daily_limit(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(shopper_daily_offer_cap=2)
    store = engine.create_store()
    for _ in range(3):
        campaign(engine, [store["id"]], daily_cap_per_shopper=5)
    shopper = quick_shopper(engine, "c1")
    assert len(engine.ping(shopper, INSIDE).json()["coupons"]) == 2

    _lose_hot_state(engine)
    again = reenter(engine, shopper, timedelta(minutes=20))

    assert again["coupons"] == []
    assert engine.count(Coupon) == 2
    [event] = [e for e in again["events"] if e["kind"] == "enter"]
    assert {r["reason"] for r in refusals_of(engine, event["id"])} == {"shopper_daily_limit"}


def test_changing_time_zone_does_not_reopen_the_campaigns_daily_cap(engine_api: Engine) -> None:
    """At 10:20 UTC it is already tomorrow in Kiritimati (UTC+14) and still yesterday in Pago
    Pago (UTC-11). The day that starts counting there already holds the coupon of 10:20 UTC."""
    store = engine_api.create_store()
    campaign(engine_api, [store["id"]], daily_cap_per_shopper=1)
    shopper = quick_shopper(engine_api, "c1")
    engine_api.clock.set(START.replace(hour=10, minute=20))
    assert len(engine_api.ping(shopper, INSIDE).json()["coupons"]) == 1

    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        put = engine_api.client.put(
            "/v1/sdk/preferences", headers=shopper["auth"], json={"timezone": zone}
        )
        assert put.status_code == 200, put.text
        again = reenter(engine_api, shopper, timedelta(minutes=5))

        assert again["coupons"] == [], zone
        assert again["events"][-1]["reason"] == "campaign_daily_cap", zone
    assert engine_api.count(Coupon) == 1
