"""The client's retry rules, against a scripted server (httpx.MockTransport): which calls are
repeated, how often, and with the same Idempotency-Key."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from client import ApiError, OfferEngineClient, Ping, RetryPolicy

BUSY = httpx.Response(503, json={"error": {"code": "unavailable", "message": "busy"}})


def _client(answers: list[httpx.Response], seen: list[httpx.Request]) -> OfferEngineClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    http = httpx.Client(transport=httpx.MockTransport(handle), base_url="http://engine.test")
    waits: list[float] = []
    return OfferEngineClient(http=http, retry=RetryPolicy(attempts=3, sleep=waits.append))


def test_pings_are_retried_with_the_same_key_and_ids() -> None:
    seen: list[httpx.Request] = []
    ok = {"accepted": 1, "consent_event_id": 1, "events": [], "coupons": []}
    api = _client([BUSY, httpx.Response(200, json=ok)], seen)
    device = api.sdk.session("token")
    result = device.send_pings([Ping(lon=1, lat=2, recorded_at=datetime.now(UTC))])
    assert result.accepted == 1 and len(seen) == 2
    assert seen[0].headers["Idempotency-Key"] == seen[1].headers["Idempotency-Key"]
    assert seen[0].content == seen[1].content  # same ping ids: the engine drops repeats


def test_a_consent_is_never_repeated_automatically() -> None:
    seen: list[httpx.Request] = []
    api = _client([BUSY, BUSY], seen)
    with pytest.raises(ApiError) as refused:
        api.sdk.session("token").give_consent("location_tracking", "n-1")
    assert refused.value.status == 503 and len(seen) == 1


def test_reads_give_up_after_the_policy_attempts() -> None:
    seen: list[httpx.Request] = []
    api = _client([BUSY, BUSY, BUSY, BUSY], seen)
    with pytest.raises(ApiError) as refused:
        api.sdk.session("token").inbox()
    assert refused.value.code == "unavailable" and len(seen) == 3


def test_a_4xx_is_raised_at_once_with_the_engine_error() -> None:
    seen: list[httpx.Request] = []
    gone = httpx.Response(404, json={"error": {"code": "offer_not_found", "message": "no offer"}})
    api = _client([gone], seen)
    with pytest.raises(ApiError) as refused:
        api.sdk.session("token").why("cpn_x")
    assert (refused.value.status, refused.value.code, len(seen)) == (404, "offer_not_found", 1)
