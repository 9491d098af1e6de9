"""Rate limits (per device, key and address, shared through the hot state), body size limits,
CORS and strict validation, over HTTP on both stacks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from core.apikeys import ApiKeyAdmin
from core.ratelimit import RateLimits, RouteLimits
from core.settings import INSECURE_KEYS
from geo.models import Ping
from tests.api.conftest import INSIDE, MANAGER, Engine, EngineFactory


def _limited(response: object) -> int:
    assert response.status_code == 429, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["error"]["code"] == "rate_limited", body
    return int(response.headers["Retry-After"])  # type: ignore[attr-defined]


def test_pings_are_limited_per_device_until_the_window_ends(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(rate_limits=RateLimits(pings=RouteLimits(per_device=3)))
    walker, other = engine.shopper(), engine.shopper(email="other@example.com", customer="c-2")
    for _ in range(3):
        assert engine.ping(walker, INSIDE).status_code == 200
    engine.clock.advance(timedelta(seconds=20))
    retry = _limited(engine.ping(walker, INSIDE))
    assert retry == 40, "the window opened at the first ping's minute"
    assert engine.ping(other, INSIDE).status_code == 200, "another device has its own budget"
    engine.clock.advance(timedelta(seconds=retry))
    assert engine.ping(walker, INSIDE).status_code == 200


def test_the_limit_is_shared_by_every_api_process(make_engine_api: EngineFactory) -> None:
    limits = RateLimits(pings=RouteLimits(per_device=4))
    first, second = make_engine_api(rate_limits=limits), make_engine_api(rate_limits=limits)
    walker = first.shopper()
    for engine in (first, second, first, second):
        assert engine.ping(walker, INSIDE).status_code == 200
    if first.runtime.state.shared:
        _limited(second.ping(walker, INSIDE))  # Redis: one count for both processes
        _limited(first.ping(walker, INSIDE))
    else:
        # In-process state is one process's own: each counted 2 of 4 (why Redis is needed
        # for more than one process).
        assert second.ping(walker, INSIDE).status_code == 200


def test_manager_calls_are_limited_per_key_and_per_address(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(rate_limits=RateLimits(manager=RouteLimits(per_key=2, per_ip=3)))
    admin = ApiKeyAdmin(engine.runtime.sessions, engine.runtime.state, engine.clock)
    other_key = {"X-API-Key": admin.create("manager", "second console").key}
    engine.clock.advance(timedelta(seconds=60))  # a fresh window: publishing notices counted
    for _ in range(2):
        assert engine.client.get("/v1/manager/stores", headers=MANAGER).status_code == 200
    message = engine.client.get("/v1/manager/stores", headers=MANAGER)
    _limited(message)
    assert "for this key" in message.json()["error"]["message"]
    # The other key still has its own budget, but the address has now spent its 3.
    _limited(engine.client.get("/v1/manager/stores", headers=other_key))
    assert (
        "for this ip"
        in engine.client.get("/v1/manager/stores", headers=other_key).json()["error"]["message"]
    )


def test_an_oversized_body_is_refused_with_413_before_anything_is_stored(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(max_body_bytes=4096)
    walker = engine.shopper()
    pings = [
        {"lon": INSIDE[0], "lat": INSIDE[1], "recorded_at": engine.clock.now().isoformat()}
    ] * 100
    big = engine.client.post("/v1/sdk/pings", headers=walker["auth"], json={"pings": pings})
    assert big.status_code == 413, big.text
    assert big.json()["error"] == {
        "code": "payload_too_large",
        "message": "the request body is larger than the 4096 bytes allowed here",
    }
    assert engine.count(Ping) == 0


def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(
    make_engine_api: EngineFactory,
) -> None:
    engine = make_engine_api(max_body_bytes=4096)
    walker = engine.shopper()
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b'{"pings": ['
        for i in range(200):
            sent.append(i)
            yield b'{"lon": 24.9414, "lat": 60.1699, "recorded_at": "2026-11-23T09:00:00Z"},'
        yield b'{"lon": 24.9414, "lat": 60.1699, "recorded_at": "2026-11-23T09:00:00Z"}]}'

    headers = {**walker["auth"], "Content-Type": "application/json"}
    response = engine.client.post("/v1/sdk/pings", headers=headers, content=chunks())
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert engine.count(Ping) == 0
    small = engine.ping(walker, INSIDE)
    assert small.status_code == 200, "a body under the limit still goes through"


def test_cors_allows_the_console_origin_only(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(public_base_url="https://offers.example.com/base")
    console = engine.client.get(
        "/v1/manager/stores", headers={**MANAGER, "Origin": "https://offers.example.com"}
    )
    assert console.headers.get("access-control-allow-origin") == "https://offers.example.com"
    stranger = engine.client.get(
        "/v1/manager/stores", headers={**MANAGER, "Origin": "https://evil.example.net"}
    )
    assert stranger.status_code == 200  # a browser blocks it; no allow header is what matters
    assert "access-control-allow-origin" not in stranger.headers
    preflight = engine.client.options(
        "/v1/manager/stores",
        headers={
            "Origin": "https://evil.example.net",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-API-Key",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_origins_can_be_configured(make_engine_api: EngineFactory) -> None:
    engine = make_engine_api(cors_origins=["https://console.example.org"])
    ok = engine.client.get("/health", headers={"Origin": "https://console.example.org"})
    assert ok.headers.get("access-control-allow-origin") == "https://console.example.org"
    default = engine.client.get("/health", headers={"Origin": "http://127.0.0.1:8000"})
    assert "access-control-allow-origin" not in default.headers


def test_unknown_fields_and_out_of_range_values_are_refused(engine_api: Engine) -> None:
    walker = engine_api.shopper()
    now = engine_api.clock.now().isoformat()
    extra = engine_api.client.post(
        "/v1/sdk/pings",
        headers=walker["auth"],
        json={"pings": [{"lon": 1, "lat": 2, "recorded_at": now, "altitude": 3}]},
    )
    assert extra.status_code == 422 and "altitude" in extra.json()["error"]["message"]
    far = engine_api.client.post(
        "/v1/sdk/pings",
        headers=walker["auth"],
        json={"pings": [{"lon": 181, "lat": 2, "recorded_at": now}]},
    )
    assert far.status_code == 422 and "lon" in far.json()["error"]["message"]


def test_an_instant_at_the_end_of_time_is_refused_not_a_crash(engine_api: Engine) -> None:
    """Found by the fuzzer: the receipts window around year 9999 overflowed into a 500."""
    walker = engine_api.register()
    response = engine_api.client.get(
        "/v1/compliance/receipts",
        headers={"X-API-Key": INSECURE_KEYS["compliance"]},
        params={"subject_id": walker["subject_id"], "at": "9999-12-31T23:59:59Z"},
    )
    assert response.status_code == 422, response.text
    assert "out of range" in response.json()["error"]["message"]
