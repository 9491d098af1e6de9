"""Geofencing through the HTTP API: polygons, store hours, dwell, pass-by prediction, bad fixes."""

from __future__ import annotations

from datetime import timedelta

from geo.models import FenceEvent, Ping
from offers.models import Coupon
from tests.api.conftest import INSIDE, MANAGER, OUTSIDE, STORE_LAT, STORE_LON, Engine

# A square shop floor of about 55 m x 55 m with a 20 m courtyard (a hole) in the middle.
D = 0.0005
H = 0.0001
SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [
            [STORE_LON - D, STORE_LAT - D / 2],
            [STORE_LON + D, STORE_LAT - D / 2],
            [STORE_LON + D, STORE_LAT + D / 2],
            [STORE_LON - D, STORE_LAT + D / 2],
            [STORE_LON - D, STORE_LAT - D / 2],
        ],
        [
            [STORE_LON - H, STORE_LAT - H / 2],
            [STORE_LON + H, STORE_LAT - H / 2],
            [STORE_LON + H, STORE_LAT + H / 2],
            [STORE_LON - H, STORE_LAT + H / 2],
            [STORE_LON - H, STORE_LAT - H / 2],
        ],
    ],
}


def _store(engine: Engine, **body: object) -> dict[str, object]:
    response = engine.client.post(
        "/v1/manager/stores",
        headers=MANAGER,
        json={"name": "Polygon shop", "timezone": "Europe/Helsinki", **body},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_polygon_fence_with_a_hole(engine_api: Engine) -> None:
    store = _store(engine_api, fence={"geometry": SQUARE})
    assert store["fences"][0]["kind"] == "polygon"  # type: ignore[index]
    shopper = engine_api.shopper()
    in_hole = engine_api.ping(shopper, (STORE_LON, STORE_LAT)).json()
    assert in_hole["events"] == []
    engine_api.clock.advance(timedelta(seconds=20))
    on_floor = engine_api.ping(shopper, (STORE_LON + 0.0003, STORE_LAT)).json()
    assert [e["kind"] for e in on_floor["events"]] == ["enter"]


def test_invalid_polygon_is_refused_with_the_reason(engine_api: Engine) -> None:
    bow_tie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    response = engine_api.client.post(
        "/v1/manager/stores", headers=MANAGER, json={"name": "x", "fence": {"geometry": bow_tie}}
    )
    assert response.status_code == 422
    assert "Self-intersection" in response.json()["error"]["message"]
    both = engine_api.client.post(
        "/v1/manager/stores",
        headers=MANAGER,
        json={"name": "x", "fence": {"geometry": SQUARE, "lon": 1, "lat": 1, "radius_m": 5}},
    )
    assert both.status_code == 422 and "not both" in both.json()["error"]["message"]


def test_enter_while_closed_is_recorded_but_gets_no_offer(engine_api: Engine) -> None:
    # 09:00 UTC on a Monday is 11:00 in Helsinki; the shop opens at noon.
    store = _store(
        engine_api,
        fence={"lon": STORE_LON, "lat": STORE_LAT, "radius_m": 50},
        opening_hours={"mon": [["12:00", "18:00"]]},
    )
    engine_api.create_campaign([str(store["id"])])
    body = engine_api.ping(engine_api.shopper(), INSIDE).json()
    [event] = body["events"]
    assert (event["kind"], event["eligible"], event["reason"]) == ("enter", False, "store_closed")
    assert body["coupons"] == [] and engine_api.count(Coupon) == 0
    assert engine_api.count(FenceEvent, FenceEvent.reason == "store_closed") == 1


def test_dwell_fires_once_after_the_fences_threshold(engine_api: Engine) -> None:
    _store(engine_api, fence={"lon": STORE_LON, "lat": STORE_LAT, "radius_m": 50, "dwell_s": 90})
    shopper = engine_api.shopper()
    kinds = []
    for _ in range(8):
        kinds += [e["kind"] for e in engine_api.ping(shopper, INSIDE).json()["events"]]
        engine_api.clock.advance(timedelta(seconds=30))
    assert kinds == ["enter", "dwell"]


def test_walking_towards_a_store_predicts_the_pass_by(engine_api: Engine) -> None:
    store = _store(engine_api, fence={"lon": STORE_LON, "lat": STORE_LAT, "radius_m": 30})
    shopper = engine_api.shopper()
    start = engine_api.clock.now()
    # 600 m west of the shop, walking east at 1.5 m/s, as the phone reports.
    west = STORE_LON - 600 / (111_195 * 0.4985)
    response = engine_api.client.post(
        "/v1/sdk/pings",
        headers=shopper["auth"],
        json={
            "pings": [
                {
                    "lon": west,
                    "lat": STORE_LAT,
                    "accuracy_m": 8,
                    "speed_mps": 1.5,
                    "heading_deg": 90,
                    "recorded_at": start.isoformat(),
                }
            ]
        },
    )
    [event] = response.json()["events"]
    assert (event["kind"], event["store_id"]) == ("approaching", store["id"])
    assert abs(event["details"]["eta_s"] - 570 / 1.5) < 15
    assert abs(event["details"]["distance_m"] - 570) < 5


def test_repeated_mock_and_stale_fixes_are_stored_but_not_used(engine_api: Engine) -> None:
    _store(engine_api, fence={"lon": STORE_LON, "lat": STORE_LAT, "radius_m": 50})
    shopper = engine_api.shopper()
    now = engine_api.clock.now()
    fix = {"lon": OUTSIDE[0], "lat": OUTSIDE[1], "accuracy_m": 5}
    body = engine_api.client.post(
        "/v1/sdk/pings",
        headers=shopper["auth"],
        json={
            "pings": [
                {**fix, "id": "a", "recorded_at": now.isoformat()},
                {**fix, "id": "a", "recorded_at": (now + timedelta(seconds=5)).isoformat()},
                {
                    "lon": INSIDE[0],
                    "lat": INSIDE[1],
                    "mock": True,
                    "id": "b",
                    "recorded_at": (now + timedelta(seconds=10)).isoformat(),
                },
                {
                    **fix,
                    "id": "c",
                    "accuracy_m": 500,
                    "recorded_at": (now + timedelta(seconds=15)).isoformat(),
                },
                {**fix, "id": "d", "recorded_at": (now - timedelta(seconds=60)).isoformat()},
            ]
        },
    ).json()
    assert body["accepted"] == 2  # "a" and the older "d" (a first batch has no watermark yet)
    assert body["ignored"] == {"duplicate": 1, "mock": 1, "inaccurate": 1}
    assert body["events"] == []
    assert engine_api.count(Ping) == 5
    assert engine_api.count(Ping, Ping.status == "mock") == 1
    later = engine_api.client.post(
        "/v1/sdk/pings",
        headers=shopper["auth"],
        json={
            "pings": [{**fix, "id": "e", "recorded_at": (now - timedelta(seconds=30)).isoformat()}]
        },
    ).json()
    assert later["ignored"] == {"stale": 1}


def test_a_fix_stamped_ahead_of_the_servers_clock_is_stored_but_not_used(
    engine_api: Engine,
) -> None:
    """A phone whose clock is a day ahead sends one fix. Used, it would become the device's
    watermark and every correctly stamped fix after it would be stale until that day came."""
    _store(engine_api, fence={"lon": STORE_LON, "lat": STORE_LAT, "radius_m": 50})
    shopper = engine_api.shopper()
    now = engine_api.clock.now()

    ahead = engine_api.ping(shopper, OUTSIDE, at=now + timedelta(days=1)).json()
    slightly = engine_api.ping(shopper, OUTSIDE, at=now + timedelta(seconds=60)).json()
    engine_api.clock.advance(timedelta(minutes=2))
    inside = engine_api.ping(shopper, INSIDE).json()

    assert (ahead["accepted"], ahead["ignored"]) == (0, {"future": 1})
    assert (slightly["accepted"], slightly["ignored"]) == (1, {})  # within 2 minutes: used
    assert (inside["accepted"], [e["kind"] for e in inside["events"]]) == (1, ["enter"])
    assert engine_api.count(Ping, Ping.status == "future") == 1


def test_a_timestamp_out_of_range_in_utc_is_refused_with_the_reason(engine_api: Engine) -> None:
    shopper = engine_api.shopper()
    for stamp in ("0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-01:00"):
        response = engine_api.client.post(
            "/v1/sdk/pings",
            headers=shopper["auth"],
            json={"pings": [{"lon": INSIDE[0], "lat": INSIDE[1], "recorded_at": stamp}]},
        )

        assert response.status_code == 422, (stamp, response.text)
        assert "out of range in UTC" in response.text
    assert engine_api.count(Ping) == 0
