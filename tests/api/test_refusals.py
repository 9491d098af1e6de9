"""Every refusal is a clear 4xx (or 503) with an error body; nothing is half-done."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.settings import INSECURE_KEYS
from core.state import RedisHotState
from geo.models import Ping, Store
from offers.models import Campaign
from tests.api.conftest import INSIDE, MANAGER, POS, SDK_KEY, Engine, EngineFactory

COMPLIANCE = {"X-API-Key": INSECURE_KEYS["compliance"]}


def _error(response: object, status: int, code: str) -> str:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/manager/stores"),
        ("get", "/v1/manager/stores"),
        ("post", "/v1/manager/campaigns"),
        ("post", "/v1/pos/redemptions"),
        ("post", "/v1/sdk/devices"),
    ],
)
def test_role_endpoints_need_their_key(engine_api: Engine, method: str, path: str) -> None:
    missing = engine_api.client.request(method, path, json={})
    assert "X-API-Key" in _error(missing, 401, "unauthenticated")
    wrong = engine_api.client.request(method, path, json={}, headers={"X-API-Key": "not-the-key"})
    _error(wrong, 401, "unauthenticated")


def test_one_roles_key_does_not_open_another_role(engine_api: Engine) -> None:
    _error(engine_api.client.get("/v1/manager/stores", headers=POS), 401, "unauthenticated")
    _error(
        engine_api.client.post(
            "/v1/pos/redemptions", headers=MANAGER, json={"code": "ABCDE-12345", "store_id": "x"}
        ),
        401,
        "unauthenticated",
    )
    _error(
        engine_api.client.post(
            "/v1/sdk/pings",
            headers={"Authorization": f"Bearer {SDK_KEY['X-API-Key']}"},
            json={"pings": [{"lon": 0, "lat": 0, "recorded_at": "2026-11-23T09:00:00Z"}]},
        ),
        401,
        "unauthenticated",
    )


def test_device_calls_need_an_untampered_device_token(engine_api: Engine) -> None:
    device = engine_api.register()
    ping = {"pings": [{"lon": 0, "lat": 0, "recorded_at": "2026-11-23T09:00:00Z"}]}
    _error(engine_api.client.post("/v1/sdk/pings", json=ping), 401, "unauthenticated")
    token = device["token"]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    _error(
        engine_api.client.post(
            "/v1/sdk/pings", json=ping, headers={"Authorization": f"Bearer {tampered}"}
        ),
        401,
        "unauthenticated",
    )
    engine_api.clock.advance(timedelta(days=31))  # past the token's 30-day life
    message = _error(
        engine_api.client.post("/v1/sdk/pings", json=ping, headers=device["auth"]),
        401,
        "unauthenticated",
    )
    assert "expired" in message
    assert engine_api.count(Ping) == 0


@pytest.mark.parametrize(
    ("fence", "needle"),
    [
        ({"lon": 181, "lat": 60, "radius_m": 50}, "fence.lon"),
        ({"lon": 24, "lat": -91, "radius_m": 50}, "fence.lat"),
        ({"lon": 24, "lat": 60, "radius_m": 0}, "fence.radius_m"),
        ({"lon": 24, "lat": 60, "radius_m": 60_000}, "fence.radius_m"),
        ({"lon": 24, "lat": 60}, "needs radius_m"),
    ],
)
def test_bad_fence_is_refused_naming_the_field(
    engine_api: Engine, fence: dict[str, float], needle: str
) -> None:
    response = engine_api.client.post(
        "/v1/manager/stores", headers=MANAGER, json={"name": "S", "fence": fence}
    )
    assert needle in _error(response, 422, "invalid_request")
    assert engine_api.count(Store) == 0


def test_unknown_time_zone_and_duplicate_external_id(engine_api: Engine) -> None:
    body = {"name": "S", "external_id": "osm-1", "fence": {"lon": 24, "lat": 60, "radius_m": 50}}
    bad_zone = engine_api.client.post(
        "/v1/manager/stores", headers=MANAGER, json={**body, "timezone": "Mars/Olympus"}
    )
    assert "Mars/Olympus" in _error(bad_zone, 422, "invalid_timezone")
    assert (
        engine_api.client.post("/v1/manager/stores", headers=MANAGER, json=body).status_code == 201
    )
    _error(
        engine_api.client.post("/v1/manager/stores", headers=MANAGER, json=body),
        409,
        "store_conflict",
    )
    assert engine_api.count(Store) == 1


def test_campaign_validation(engine_api: Engine) -> None:
    store = engine_api.create_store()
    offer = {"title": "t", "body": "b", "discount_text": "d", "valid_minutes": 10}
    unknown = engine_api.client.post(
        "/v1/manager/campaigns",
        headers=MANAGER,
        json={"name": "c", "store_ids": ["st_nope"], "offer": offer},
    )
    assert "st_nope" in _error(unknown, 422, "invalid_campaign")
    backwards = engine_api.client.post(
        "/v1/manager/campaigns",
        headers=MANAGER,
        json={
            "name": "c",
            "store_ids": [store["id"]],
            "offer": offer,
            "starts_at": "2026-12-01T00:00:00Z",
            "ends_at": "2026-11-01T00:00:00Z",
        },
    )
    assert "ends_at" in _error(backwards, 422, "invalid_campaign")
    zero = engine_api.client.post(
        "/v1/manager/campaigns",
        headers=MANAGER,
        json={"name": "c", "store_ids": [store["id"]], "offer": {**offer, "valid_minutes": 0}},
    )
    assert "valid_minutes" in _error(zero, 422, "invalid_request")
    assert engine_api.count(Campaign) == 0


def test_bad_pings_are_refused_whole(engine_api: Engine) -> None:
    shopper = engine_api.shopper()
    good = {"lon": 24.9, "lat": 60.1, "recorded_at": "2026-11-23T09:00:00Z"}
    cases = [
        ({"pings": []}, "pings"),
        ({"pings": [good] * 1001}, "pings"),
        ({"pings": [good, {**good, "lat": 95}]}, "pings.1.lat"),
        ({"pings": [{**good, "recorded_at": "2026-11-23T09:00:00"}]}, "time zone"),
        ({"pings": [{**good, "accuracy_m": -1}]}, "accuracy_m"),
        ({"pings": [{**good, "speed": 3}]}, "speed"),
    ]
    for body, needle in cases:
        response = engine_api.client.post("/v1/sdk/pings", headers=shopper["auth"], json=body)
        assert needle in _error(response, 422, "invalid_request"), body
    assert (
        engine_api.client.post(
            "/v1/sdk/pings",
            headers=shopper["auth"],
            content=b"{not json",
        ).status_code
        == 422
    )
    assert engine_api.count(Ping) == 0


def test_openapi_lists_the_sdk_manager_and_pos_routes(engine_api: Engine) -> None:
    spec = engine_api.client.get("/openapi.json").json()
    tags = {
        tag for path in spec["paths"].values() for op in path.values() for tag in op.get("tags", [])
    }
    assert {"sdk", "manager", "pos"} <= tags
    assert "/v1/pos/redemptions" in spec["paths"] and "/v1/sdk/pings" in spec["paths"]
    assert "410" in spec["paths"]["/v1/pos/redemptions"]["post"]["responses"]


def test_hot_state_down_answers_503_and_processes_nothing(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api()
    store = engine.create_store()
    shopper = engine.shopper()
    engine.runtime.ingestor.state = RedisHotState("redis://127.0.0.1:1/0", timeout_s=0.2)
    response = engine.ping(shopper, INSIDE)
    assert "hot-state" in _error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "5"
    assert engine.count(Ping) == 0
    assert store["id"]


def test_a_nul_character_in_any_input_is_refused_not_a_500(engine_api: Engine) -> None:
    """PostgreSQL text cannot hold NUL; SQLite finds nothing. Either way a clear 4xx."""
    store = engine_api.create_store()
    answers = [
        engine_api.client.post(
            "/v1/pos/redemptions", headers=POS, json={"code": "AB\u0000CD", "store_id": store["id"]}
        ),
        engine_api.client.post(
            "/v1/pos/voids", headers=POS, json={"code": "AB\u0000CD", "store_id": store["id"]}
        ),
        engine_api.client.get("/v1/compliance/subjects/ab%00cd/export", headers=COMPLIANCE),
        engine_api.client.delete("/v1/compliance/subjects/ab%00cd", headers=COMPLIANCE),
        engine_api.client.get(
            "/v1/compliance/receipts",
            headers=COMPLIANCE,
            params={"subject_id": "a\u0000b", "at": "2026-11-23T09:00:00Z"},
        ),
    ]

    for answer in answers:
        assert answer.status_code in (404, 422), (answer.request.url, answer.text)
        assert "error" in answer.json()


@pytest.mark.parametrize("kind", ["ndjson", "csv"])
@pytest.mark.parametrize(
    "params", [{"from": "0001-01-01T00:00:00+14:00"}, {"to": "9999-12-31T23:59:59-14:00"}]
)
def test_a_ledger_range_out_of_range_in_utc_is_refused(
    engine_api: Engine, kind: str, params: dict[str, str]
) -> None:
    answer = engine_api.client.get(
        f"/v1/compliance/ledger.{kind}", headers=COMPLIANCE, params=params
    )

    assert "out of range in UTC" in _error(answer, 422, "invalid_input")
