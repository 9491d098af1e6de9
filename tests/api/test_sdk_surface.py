"""The SDK surface through the typed client, on both stacks: token rotation, the inbox with the
opened callback, "why this offer", nearest fences for on-device monitoring, the own-data
download, and refusals of every cross-device attempt."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest.mock import ANY

import pytest
from sqlalchemy import select

from client import ApiError, DeviceSession, OfferEngineClient, Ping
from consent.models import ConsentReceipt
from core.settings import INSECURE_KEYS
from geo.models import Ping as PingRow
from offers.models import Coupon
from tests.api.conftest import INSIDE, OUTSIDE, STORE_LAT, STORE_LON, Engine


def _client(engine: Engine) -> OfferEngineClient:
    return OfferEngineClient(
        http=engine.client,
        sdk_key=INSECURE_KEYS["sdk"],
        manager_key=INSECURE_KEYS["manager"],
        pos_key=INSECURE_KEYS["pos"],
    )


def _shopper(engine: Engine, api: OfferEngineClient, customer: str) -> DeviceSession:
    device = api.sdk.register_device(customer, "ios")
    device.give_consent("location_tracking", "n-1")
    device.give_consent("marketing_offers", "n-1", channel="in_app")
    return device


def _visit(engine: Engine, device: DeviceSession) -> Any:
    now = engine.clock.now()
    return device.send_pings(
        [
            Ping(lon=OUTSIDE[0], lat=OUTSIDE[1], recorded_at=now - timedelta(seconds=60)),
            Ping(lon=INSIDE[0], lat=INSIDE[1], recorded_at=now, accuracy_m=10),
        ]
    )


@pytest.fixture
def setup(engine_api: Engine) -> tuple[Engine, OfferEngineClient, dict[str, Any]]:
    api = _client(engine_api)
    store = api.manager.create_store(
        "Corner Cafe", lon=STORE_LON, lat=STORE_LAT, radius_m=50, timezone="Europe/Helsinki"
    )
    api.manager.create_campaign(
        "Coffee now",
        [store.id],
        title="Coffee break",
        body="Pop in.",
        discount_text="30% off",
        valid_minutes=10,
    )
    return engine_api, api, {"store": store}


def test_rotated_token_works_and_the_old_one_stops(setup: Any) -> None:
    engine, api, _ = setup
    device = _shopper(engine, api, "rot-1")
    old = device.token
    # a ping first: the device's token generation is now cached with its subject's consent
    device.send_pings([Ping(lon=OUTSIDE[0], lat=OUTSIDE[1], recorded_at=engine.clock.now())])
    token = device.rotate_token()
    assert token.generation == 2 and token.token != old
    assert [c.purpose for c in device.consents()]  # the new token works
    stale = api.sdk.session(old)
    with pytest.raises(ApiError) as refused:
        stale.consents()
    assert refused.value.status == 401
    with pytest.raises(ApiError) as again:
        stale.rotate_token()  # the old token cannot mint another one either
    assert again.value.status == 401
    with pytest.raises(ApiError) as pings:
        stale.send_pings([Ping(lon=INSIDE[0], lat=INSIDE[1], recorded_at=engine.clock.now())])
    assert pings.value.status == 401


def test_a_second_device_of_a_shopper_is_accepted_after_the_first_cached_its_generation(
    setup: Any,
) -> None:
    """The first device's pings cache its subject's consent with the device generations known
    then; a device registered later is not among them and is read from the database."""
    engine, api, _ = setup
    phone = _shopper(engine, api, "two-devices")
    phone.send_pings([Ping(lon=OUTSIDE[0], lat=OUTSIDE[1], recorded_at=engine.clock.now())])
    tablet = api.sdk.register_device("two-devices", "android")

    accepted = tablet.send_pings(
        [Ping(lon=OUTSIDE[0], lat=OUTSIDE[1], recorded_at=engine.clock.now())]
    )

    later = engine.clock.now() + timedelta(seconds=1)
    again = phone.send_pings([Ping(lon=OUTSIDE[0], lat=OUTSIDE[1], recorded_at=later)])
    assert accepted.accepted == 1 and again.accepted == 1


def test_inbox_opened_and_why_this_offer(setup: Any) -> None:
    engine, api, ctx = setup
    device = _shopper(engine, api, "inbox-1")
    result = _visit(engine, device)
    [coupon] = result.coupons
    engine.clock.advance(timedelta(minutes=3))
    [live] = device.inbox()
    assert live.coupon_id == coupon.coupon_id and live.remaining_s == 7 * 60
    assert live.store_name == "Corner Cafe" and live.opened_at is None

    first = device.opened(coupon.coupon_id)
    assert first.first_open and first.status == "issued"
    engine.clock.advance(timedelta(seconds=30))
    second = device.opened(coupon.coupon_id)
    assert not second.first_open and second.opened_at == first.opened_at
    assert device.inbox()[0].opened_at == first.opened_at
    with engine.runtime.sessions() as session:
        row = session.scalar(select(Coupon).where(Coupon.id == coupon.coupon_id))
        assert row is not None and row.opened_at == first.opened_at

    why = device.why(coupon.coupon_id)
    assert why.store_id == ctx["store"].id and why.campaign == "Coffee now"
    assert why.trigger is not None and why.trigger.kind == "enter"
    assert why.trigger.event_id == result.events[-1].id
    assert why.consent is not None and why.consent.purpose == "marketing_offers"
    assert why.consent.notice_version == "n-1" and why.consent.channel == "in_app"
    assert why.receipt is not None and why.receipt.allowed
    assert why.receipt.event_hash == why.consent.entry_hash
    assert "Corner Cafe" in why.explanation

    engine.clock.advance(timedelta(minutes=10))
    assert device.inbox() == []
    late = device.opened(coupon.coupon_id)
    assert late.status == "expired" and late.opened_at == first.opened_at


def test_nearest_fences_capped_by_the_os_and_ranked(setup: Any) -> None:
    engine, api, ctx = setup
    for i in range(1, 25):  # a row of stores every 100 m east of the first
        api.manager.create_store(
            f"Store {i}", lon=STORE_LON + i * 0.0018, lat=STORE_LAT, radius_m=30
        )
    square = [[STORE_LON - 0.004, STORE_LAT - 0.002], [STORE_LON - 0.003, STORE_LAT - 0.002]]
    ring = [*square, [STORE_LON - 0.003, STORE_LAT - 0.001], [STORE_LON - 0.004, STORE_LAT - 0.001]]
    api.manager.create_store(
        "Park kiosk", geometry={"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    )
    device = _shopper(engine, api, "near-1")
    ios = device.nearest_fences(STORE_LON, STORE_LAT)
    assert ios.platform == "ios" and ios.limit == 20 and len(ios.fences) == 20
    assert ios.fences[0].store_id == ctx["store"].id and ios.fences[0].distance_m == 0
    distances = [f.distance_m for f in ios.fences]
    assert distances == sorted(distances)
    assert ios.resync_radius_m == distances[-1]
    polygon = [f for f in ios.fences if f.kind == "polygon"]
    assert len(polygon) == 1 and polygon[0].store_name == "Park kiosk"
    assert 60 < polygon[0].radius_m < 80  # half the diagonal of a ~56 m x 111 m box
    android = device.nearest_fences(STORE_LON, STORE_LAT, platform="android")
    assert android.limit == 100 and len(android.fences) == 26  # all there are
    assert android.resync_radius_m is None
    with pytest.raises(ApiError) as too_many:
        device.nearest_fences(STORE_LON, STORE_LAT, limit=21)
    assert too_many.value.status == 422 and "20" in too_many.value.message


def test_nearest_fences_need_location_consent(setup: Any) -> None:
    engine, api, _ = setup
    device = api.sdk.register_device("near-2", "android")
    with pytest.raises(ApiError) as refused:
        device.nearest_fences(STORE_LON, STORE_LAT)
    assert refused.value.status == 403
    refusals = engine.count(
        ConsentReceipt,
        ConsentReceipt.subject_id == device.subject_id,
        ConsentReceipt.action == "fence_sync",
        ConsentReceipt.allowed.is_(False),
    )
    assert refusals == 1  # the refusal is on record; nothing else was


def test_own_data_download(setup: Any) -> None:
    engine, api, _ = setup
    device = _shopper(engine, api, "data-1")
    [coupon] = _visit(engine, device).coupons
    data = device.my_data()
    assert data["subject"]["id"] == device.subject_id
    assert [c["id"] for c in data["coupons"]] == [coupon.coupon_id]
    history = data["consents"]["history"]
    assert {(e["purpose"], e["notice_version"]) for e in history} == {
        ("location_tracking", "n-1"),
        ("marketing_offers", "n-1"),
    }
    assert "deliveries" in data and "fence_events" in data


def test_another_device_cannot_read_or_act_for_a_shopper(setup: Any) -> None:
    engine, api, _ = setup
    alice = _shopper(engine, api, "alice")
    bob = _shopper(engine, api, "bob")
    [coupon] = _visit(engine, alice).coupons

    def refusal(call: Any) -> tuple[int, str]:
        with pytest.raises(ApiError) as caught:
            call()
        return caught.value.status, caught.value.message.replace(coupon.coupon_id, "ID")

    unknown = "cpn_doesnotexist0000000000000"
    for action in ("opened", "why"):
        theirs = refusal(lambda a=action: getattr(bob, a)(coupon.coupon_id))
        nobody = refusal(lambda a=action: getattr(bob, a)(unknown))
        assert theirs[0] == 404
        assert theirs == (nobody[0], nobody[1].replace(unknown, "ID"))
    assert bob.inbox() == []
    assert bob.my_data()["coupons"] == []
    bobs = bob.my_data()
    assert bobs["subject"]["id"] == bob.subject_id
    assert [d["id"] for d in bobs["devices"]] == [bob.device_id]
    assert alice.inbox()[0].opened_at is None  # Bob's attempt recorded nothing
    # Bob's pings and consents land on Bob only; a device id in the body is not accepted.
    bob.send_pings([Ping(lon=INSIDE[0], lat=INSIDE[1], recorded_at=engine.clock.now())])
    forged = engine.client.post(
        "/v1/sdk/pings",
        headers={"Authorization": f"Bearer {bob.token}"},
        json={
            "device_id": alice.device_id,
            "pings": [{"lon": 0, "lat": 0, "recorded_at": engine.clock.now().isoformat()}],
        },
    )
    assert forged.status_code == 422
    bob.withdraw_consent("marketing_offers", "n-1", channel="in_app")
    assert {(c.purpose, c.state) for c in alice.consents()} == {
        ("location_tracking", "given"),
        ("marketing_offers", "given"),
    }
    assert engine.count(Coupon, Coupon.subject_id == alice.subject_id) == 1
    assert engine.count(PingRow, PingRow.subject_id == alice.subject_id) == 2  # her own visit only
    assert engine.count(PingRow, PingRow.device_id == bob.device_id) == 1
    # A token signed with another key, or naming another device, is refused outright.
    forged_token = engine.client.get(
        "/v1/sdk/offers", headers={"Authorization": "Bearer " + alice.token[:-4] + "AAAA"}
    )
    assert forged_token.status_code == 401


def test_two_rotations_with_one_token_only_one_wins(setup: Any) -> None:
    """The rotation is one conditional update: the second exchange of the same generation (a
    racing request, a replayed token) finds it gone and mints nothing."""
    from consent.service import SubjectRegistry

    engine, api, _ = setup
    device = _shopper(engine, api, "race-1")
    with engine.runtime.sessions() as first, engine.runtime.sessions() as second:
        assert SubjectRegistry(first).rotate_token(device.device_id, 1) == 2
        first.commit()
        assert SubjectRegistry(second).rotate_token(device.device_id, 1) is None
        second.commit()
    with pytest.raises(ApiError) as refused:
        device.inbox()  # the token of generation 1 is void now
    assert refused.value.status == 401


@pytest.mark.parametrize(
    ("authorization", "body", "status"),
    [
        (None, {"pings": "not a list"}, 401),  # who is asking is settled before the body
        ("Bearer not-a-token", {"pings": []}, 401),
        ("Basic abc", {"pings": [{"lon": 1.0, "lat": 2.0}]}, 401),
        ("valid", {"pings": "not a list"}, 422),
    ],
)
def test_the_ping_route_checks_the_token_then_the_body(
    engine_api: Engine, authorization: str | None, body: Any, status: int
) -> None:
    device = engine_api.register()
    headers = {}
    if authorization == "valid":
        headers = dict(device["auth"])
    elif authorization is not None:
        headers = {"Authorization": authorization}

    response = engine_api.client.post("/v1/sdk/pings", headers=headers, json=body)

    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content_type", "body", "status", "says"),
    [
        (
            "application/json",
            b'{"pings": [{"lon": 1.0, "lat": 91.0, "recorded_at": "%s"}]}',
            422,
            "pings.0.lat: Input should be less than or equal to 90",
        ),
        (
            "application/json",
            b'{"pings": [{"lon": 1.0, "lat": 2.0}]}',
            422,
            "pings.0.recorded_at: Field required",
        ),
        ("application/json", b'{"pings": [', 422, "Invalid JSON"),
        ("application/json", b"", 422, "Invalid JSON"),
        ("application/json", b'{"pings": [], "extra": 1}', 422, "extra: Extra inputs"),
        ("application/json", b"\xff\xfe", 422, "Invalid JSON"),
        (
            "text/plain",
            b'{"pings": [{"lon": 1.0, "lat": 2.0, "recorded_at": "%s"}]}',
            422,
            "Content-Type: application/json",
        ),
        (None, b'{"pings": [{"lon": 1.0, "lat": 2.0, "recorded_at": "%s"}]}', 200, ""),
        (
            "application/json; charset=utf-8",
            b'{"pings": [{"lon": 1.0, "lat": 2.0, "recorded_at": "%s"}]}',
            200,
            "",
        ),
        (
            "application/vnd.sdk+json",
            b'{"pings": [{"lon": 1.0, "lat": 2.0, "recorded_at": "%s"}]}',
            200,
            "",
        ),
    ],
)
def test_the_ping_route_reads_its_json_body_strictly_and_keeps_nothing_it_refuses(
    engine_api: Engine, content_type: str | None, body: bytes, status: int, says: str
) -> None:
    """The route validates its body itself (docs/scaling.md): the same 422 answers as FastAPI
    gives a declared body, JSON under any JSON media type or none, nothing else."""
    device = engine_api.register()
    engine_api.consent(device, "location_tracking")
    headers = dict(device["auth"])
    if content_type is not None:
        headers["Content-Type"] = content_type
    if b"%s" in body:
        body = body % engine_api.clock.now().isoformat().encode()

    response = engine_api.client.post("/v1/sdk/pings", headers=headers, content=body)

    assert response.status_code == status, response.text
    with engine_api.runtime.sessions() as session:
        stored = session.scalars(
            select(PingRow).where(PingRow.device_id == device["device_id"])
        ).all()
    if status == 200:
        assert response.json()["accepted"] == 1
        assert len(stored) == 1
    else:
        assert response.json()["error"] == {"code": "invalid_request", "message": ANY}
        assert says in response.json()["error"]["message"]
        assert stored == []
