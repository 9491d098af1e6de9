"""The push and webhook channels against local servers.

FCM, APNs and the browsers' Web Push services cannot be reached from here: the servers in
``push_fakes`` stand in for them and follow each provider's DOCUMENTED request format and error
bodies (FCM HTTP v1 + Google OAuth service-account flow, APNs HTTP/2 provider API with token
auth over TLS, Web Push RFC 8030/8291/8292). Every request goes over a real socket; the APNs one
over HTTP/2 with TLS from a test CA made here.
"""

from __future__ import annotations

import json
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from core.clock import ManualClock
from notify.apns import ApnsChannel
from notify.channel import OfferMessage, PermanentSendError, TransientSendError
from notify.coupon_fields import apns_id, collapse_token
from notify.errors import ProviderUnavailable, RateLimited, TokenUnregistered
from notify.fcm import FCM_SCOPE, FcmChannel
from notify.webhook import SIGNATURE_HEADER, WebhookChannel, verify_webhook_signature
from notify.webpush import WebPushChannel
from tests.integration.push_fakes import (
    Answer,
    FakeApns,
    FakeFcm,
    FakeWebhookReceiver,
    FakeWebPush,
    LocalCa,
    fcm_error,
    make_test_ca,
    serve_in_thread,
)

pytestmark = pytest.mark.integration

PROJECT = "offer-engine-test"
CLIENT_EMAIL = "push@offer-engine-test.iam.gserviceaccount.com"
SA_KEY_ID = "3f1c0ffee"
TEAM_ID = "ABCDE12345"
APNS_KEY_ID = "KEY1234567"
BUNDLE = "com.example.offers"
DEVICE = "a" * 64  # APNs device tokens are hex
FCM_TOKEN = "fcm-token-1:APA91bH"
WEBHOOK_SECRET = "whsec_" + "s3cr3t" * 6
TTL = 290


@dataclass(frozen=True)
class Keys:
    service_account: rsa.RSAPrivateKey
    apns: ec.EllipticCurvePrivateKey
    vapid: ec.EllipticCurvePrivateKey


def pem(key: Any) -> str:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def offer(clock: ManualClock, address: str, key: str = "cpn_01HZX4:push") -> OfferMessage:
    return OfferMessage(
        idempotency_key=key,
        address=address,
        title="Two coffees for one",
        body="Show this at the till in the next five minutes",
        discount_text="2 for 1",
        store_name="Bold Street",
        code="K7Q-4MX",
        expires_at=clock.now() + timedelta(seconds=TTL + 5),
        ttl_s=TTL,
    )


def closed_port_url(scheme: str = "http") -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}"


def http_date_in(seconds: int) -> Callable[[datetime], str]:
    return lambda now: format_datetime(now + timedelta(seconds=seconds), usegmt=True)


def raises_exactly(
    expected: type[Exception], send: Callable[[], object], retry_after: float | None = None
) -> Exception:
    with pytest.raises(expected) as info:
        send()
    assert type(info.value) is expected, f"{type(info.value).__name__}: {info.value}"
    if issubclass(expected, (RateLimited, ProviderUnavailable)):
        assert info.value.retry_after_s == retry_after  # type: ignore[attr-defined]
    return info.value


# --- fixtures: one server per provider for the module, fresh state and channel per test --------


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        service_account=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        apns=ec.generate_private_key(ec.SECP256R1()),
        vapid=ec.generate_private_key(ec.SECP256R1()),
    )


@pytest.fixture(scope="module")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return make_test_ca(Path(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def clock() -> ManualClock:
    # Real time (to the second): pywebpush compares VAPID ``exp`` with time.time().
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture(scope="module")
def fcm_server(keys: Keys) -> Iterator[FakeFcm]:
    fake = FakeFcm(
        ManualClock(), PROJECT, CLIENT_EMAIL, SA_KEY_ID, keys.service_account.public_key()
    )
    with serve_in_thread(fake.app) as url:
        fake.base_url = url
        yield fake


@pytest.fixture(scope="module")
def apns_server(keys: Keys, local_ca: LocalCa) -> Iterator[FakeApns]:
    fake = FakeApns(ManualClock(), TEAM_ID, APNS_KEY_ID, keys.apns.public_key(), BUNDLE)
    with serve_in_thread(fake.app, tls=local_ca) as url:
        fake.base_url = url
        yield fake


@pytest.fixture(scope="module")
def webpush_server() -> Iterator[FakeWebPush]:
    fake = FakeWebPush(ManualClock())
    with serve_in_thread(fake.app) as url:
        fake.base_url = url
        yield fake


@pytest.fixture(scope="module")
def webhook_server() -> Iterator[FakeWebhookReceiver]:
    fake = FakeWebhookReceiver(ManualClock(), WEBHOOK_SECRET)
    with serve_in_thread(fake.app) as url:
        fake.base_url = url
        yield fake


def service_account_info(key: rsa.RSAPrivateKey, token_uri: str) -> dict[str, Any]:
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": SA_KEY_ID,
        "private_key": pem(key),
        "client_email": CLIENT_EMAIL,
        "token_uri": token_uri,
    }


@pytest.fixture
def fcm(fcm_server: FakeFcm, keys: Keys, clock: ManualClock) -> Iterator[FcmChannel]:
    fcm_server.reset(clock)
    with httpx.Client(timeout=5, trust_env=False) as http:
        info = service_account_info(keys.service_account, fcm_server.token_uri)
        yield FcmChannel(PROJECT, info, base_url=fcm_server.base_url, http=http, clock=clock)


@pytest.fixture
def apns_http(local_ca: LocalCa) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(local_ca.ca_file))
    with httpx.Client(http2=True, verify=context, timeout=5, trust_env=False) as http:
        yield http


@pytest.fixture
def apns(
    apns_server: FakeApns, apns_http: httpx.Client, keys: Keys, clock: ManualClock
) -> ApnsChannel:
    apns_server.reset(clock)
    return ApnsChannel(
        TEAM_ID, APNS_KEY_ID, pem(keys.apns), BUNDLE, apns_server.base_url, apns_http, clock=clock
    )


@pytest.fixture
def webpush(
    webpush_server: FakeWebPush, keys: Keys, clock: ManualClock
) -> Iterator[WebPushChannel]:
    webpush_server.reset(clock)
    with requests.Session() as session:
        session.trust_env = False
        yield WebPushChannel(
            pem(keys.vapid), "mailto:push@example.com", session=session, clock=clock
        )


@pytest.fixture
def webhook(webhook_server: FakeWebhookReceiver, clock: ManualClock) -> Iterator[WebhookChannel]:
    webhook_server.reset(clock)
    with httpx.Client(timeout=5, trust_env=False) as http:
        url = f"{webhook_server.base_url}/hooks/offers"
        yield WebhookChannel(url, WEBHOOK_SECRET, http=http, clock=clock)


# --- FCM HTTP v1 -------------------------------------------------------------------------------


def sends(fake: FakeFcm) -> list[Any]:
    return [seen for seen in fake.seen if seen.path.endswith("/messages:send")]


def test_fcm_gets_an_oauth_token_and_sends_the_documented_message(
    fcm: FcmChannel, fcm_server: FakeFcm, keys: Keys, clock: ManualClock
) -> None:
    message = offer(clock, FCM_TOKEN)
    receipt = fcm.send(message)

    assert receipt.provider_id.startswith(f"projects/{PROJECT}/messages/")
    [token_request] = [seen for seen in fcm_server.seen if seen.path == "/token"]
    assertion = token_request.decoded["assertion"]
    assert jwt.get_unverified_header(assertion) == {"alg": "RS256", "typ": "JWT", "kid": SA_KEY_ID}
    claims = jwt.decode(
        assertion,
        keys.service_account.public_key(),
        algorithms=["RS256"],
        audience=fcm_server.token_uri,
        options={"verify_exp": False, "verify_iat": False},
    )
    issued = int(clock.now().timestamp())
    assert claims == {
        "iss": CLIENT_EMAIL,
        "scope": FCM_SCOPE,
        "aud": fcm_server.token_uri,
        "iat": issued,
        "exp": issued + 3600,
    }

    [send] = sends(fcm_server)
    assert send.path == f"/v1/projects/{PROJECT}/messages:send"
    assert send.headers["authorization"] == f"Bearer {next(iter(fcm_server.access_tokens))}"
    collapse = collapse_token(message)
    expires_epoch = str(int(message.expires_at.timestamp()))
    assert send.decoded == {
        "message": {
            "token": FCM_TOKEN,
            "notification": {"title": message.title, "body": message.body},
            "data": {
                "code": "K7Q-4MX",
                "expires_at": message.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "discount_text": "2 for 1",
                "store_name": "Bold Street",
                "idempotency_key": "cpn_01HZX4:push",
            },
            "android": {
                "ttl": f"{TTL}s",
                "collapse_key": collapse,
                "priority": "HIGH",
                "notification": {"tag": collapse},
            },
            "apns": {
                "headers": {
                    "apns-expiration": expires_epoch,
                    "apns-collapse-id": collapse,
                    "apns-priority": "10",
                    "apns-push-type": "alert",
                }
            },
            "webpush": {"headers": {"TTL": str(TTL), "Urgency": "high", "Topic": collapse}},
        }
    }


def test_fcm_reuses_the_access_token_until_five_minutes_before_it_expires(
    fcm: FcmChannel, fcm_server: FakeFcm, clock: ManualClock
) -> None:
    fcm.send(offer(clock, FCM_TOKEN))
    fcm.send(offer(clock, FCM_TOKEN))
    clock.advance(timedelta(seconds=3599 - 301))
    fcm.send(offer(clock, FCM_TOKEN))
    assert len(fcm_server.assertions) == 1
    clock.advance(timedelta(seconds=2))  # now inside the 5-minute margin
    fcm.send(offer(clock, FCM_TOKEN))
    assert len(fcm_server.assertions) == 2
    bearers = [seen.headers["authorization"] for seen in sends(fcm_server)]
    assert len(set(bearers[:3])) == 1 and bearers[3] != bearers[0]


def test_fcm_401_gets_a_new_token_and_retries_once(
    fcm: FcmChannel, fcm_server: FakeFcm, clock: ManualClock
) -> None:
    fcm.send(offer(clock, FCM_TOKEN))
    fcm_server.revoke_access_tokens()
    fcm.send(offer(clock, FCM_TOKEN))
    assert [s.decoded is not None for s in sends(fcm_server)] == [True, True, True]
    assert len(fcm_server.assertions) == 2

    fcm_server.reject_every_token = True
    before = len(sends(fcm_server))
    raises_exactly(PermanentSendError, lambda: fcm.send(offer(clock, FCM_TOKEN)))
    assert len(sends(fcm_server)) == before + 2  # one retry, not a loop


def test_fcm_service_account_the_token_endpoint_rejects_is_permanent(
    fcm_server: FakeFcm, clock: ManualClock
) -> None:
    fcm_server.reset(clock)
    wrong_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = service_account_info(wrong_key, fcm_server.token_uri)
    with httpx.Client(timeout=5, trust_env=False) as http:
        channel = FcmChannel(PROJECT, info, fcm_server.base_url, http, clock=clock)
        error = raises_exactly(PermanentSendError, lambda: channel.send(offer(clock, FCM_TOKEN)))
    assert "invalid_grant" in str(error)
    assert sends(fcm_server) == []


def fcm_answer(code: int, body: dict[str, Any], retry_after: str | None = None) -> Answer:
    return Answer(code, body, {"Retry-After": retry_after} if retry_after else {})


FCM_ERRORS = {
    "unregistered": (
        fcm_answer(404, fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity not found")),
        TokenUnregistered,
        None,
    ),
    "malformed-token": (
        fcm_answer(
            400,
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                field="message.token",
            ),
        ),
        TokenUnregistered,
        None,
    ),
    "invalid-payload": (
        fcm_answer(400, fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "bad data")),
        PermanentSendError,
        None,
    ),
    "sender-id-mismatch": (
        fcm_answer(403, fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH")),
        PermanentSendError,
        None,
    ),
    "third-party-auth": (
        fcm_answer(401, fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")),
        PermanentSendError,
        None,
    ),
    "bare-not-found-is-not-a-dead-token": (
        fcm_answer(404, fcm_error(404, "NOT_FOUND")),
        PermanentSendError,
        None,
    ),
    "quota-exceeded": (
        fcm_answer(429, fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), "30"),
        RateLimited,
        30.0,
    ),
    "unavailable": (
        fcm_answer(503, fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"), "7"),
        ProviderUnavailable,
        7.0,
    ),
    "internal": (
        fcm_answer(500, fcm_error(500, "INTERNAL", "INTERNAL")),
        ProviderUnavailable,
        None,
    ),
}


@pytest.mark.parametrize("case", FCM_ERRORS, ids=list(FCM_ERRORS))
def test_fcm_documented_errors_are_classified(
    case: str, fcm: FcmChannel, fcm_server: FakeFcm, clock: ManualClock
) -> None:
    answer, expected, retry_after = FCM_ERRORS[case]
    fcm_server.script(FCM_TOKEN, answer)
    raises_exactly(expected, lambda: fcm.send(offer(clock, FCM_TOKEN)), retry_after)
    assert len(sends(fcm_server)) == 1  # none of these gets a token refresh and a second try


def test_fcm_retry_after_as_an_http_date(
    fcm: FcmChannel, fcm_server: FakeFcm, clock: ManualClock
) -> None:
    body = fcm_error(503, "UNAVAILABLE", "UNAVAILABLE")
    fcm_server.script(FCM_TOKEN, fcm_answer(503, body, http_date_in(120)(clock.now())))
    raises_exactly(ProviderUnavailable, lambda: fcm.send(offer(clock, FCM_TOKEN)), 120.0)


def test_fcm_unreachable_is_transient(keys: Keys, clock: ManualClock) -> None:
    url = closed_port_url()
    info = service_account_info(keys.service_account, f"{url}/token")
    with httpx.Client(timeout=2, trust_env=False) as http:
        channel = FcmChannel(PROJECT, info, url, http, clock=clock)
        raises_exactly(TransientSendError, lambda: channel.send(offer(clock, FCM_TOKEN)))


# --- APNs (HTTP/2, token auth) -----------------------------------------------------------------


def test_apns_sends_over_http2_with_a_verifiable_provider_token(
    apns: ApnsChannel, apns_server: FakeApns, keys: Keys, clock: ManualClock
) -> None:
    message = offer(clock, DEVICE)
    receipt = apns.send(message)

    [seen] = apns_server.seen
    assert seen.http_version == "2"
    assert seen.path == f"/3/device/{DEVICE}"
    h = seen.headers
    assert h["apns-topic"] == BUNDLE
    assert h["apns-push-type"] == "alert"
    assert h["apns-priority"] == "10"
    assert h["apns-expiration"] == str(int(message.expires_at.timestamp()))  # absolute
    assert h["apns-collapse-id"] == collapse_token(message)
    assert len(h["apns-collapse-id"].encode()) <= 64
    assert h["apns-id"] == apns_id(message) == str(uuid.UUID(h["apns-id"]))
    assert receipt.provider_id == h["apns-id"]

    scheme, token = h["authorization"].split(" ")
    assert scheme == "bearer"
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "typ": "JWT", "kid": APNS_KEY_ID}
    claims = jwt.decode(token, keys.apns.public_key(), algorithms=["ES256"])
    assert claims == {"iss": TEAM_ID, "iat": int(clock.now().timestamp())}

    assert seen.decoded == {
        "aps": {"alert": {"title": message.title, "body": message.body}, "sound": "default"},
        "code": "K7Q-4MX",
        "expires_at": message.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "discount_text": "2 for 1",
        "store_name": "Bold Street",
    }


def test_apns_id_is_fixed_by_the_idempotency_key(apns: ApnsChannel, clock: ManualClock) -> None:
    first = apns.send(offer(clock, DEVICE, key="cpn_1:push"))
    again = apns.send(offer(clock, DEVICE, key="cpn_1:push"))
    other = apns.send(offer(clock, DEVICE, key="cpn_2:push"))
    assert first.provider_id == again.provider_id != other.provider_id


def test_apns_provider_token_is_reused_for_50_minutes(
    apns: ApnsChannel, apns_server: FakeApns, clock: ManualClock
) -> None:
    apns.send(offer(clock, DEVICE))
    clock.advance(timedelta(minutes=49, seconds=59))
    apns.send(offer(clock, DEVICE))
    clock.advance(timedelta(seconds=1))
    apns.send(offer(clock, DEVICE))
    tokens = [seen.headers["authorization"] for seen in apns_server.seen]
    assert tokens[0] == tokens[1] != tokens[2]
    assert apns_server.provider_tokens[2][1]["iat"] == int(clock.now().timestamp())


def test_apns_expired_provider_token_is_renewed_and_retried_once(
    apns: ApnsChannel, apns_server: FakeApns, clock: ManualClock
) -> None:
    apns.send(offer(clock, DEVICE))
    apns_server.expired_up_to = clock.now()  # APNs now calls the cached token expired
    clock.advance(timedelta(seconds=10))
    receipt = apns.send(offer(clock, DEVICE))
    assert receipt.provider_id
    tokens = [seen.headers["authorization"] for seen in apns_server.seen]
    assert len(tokens) == 3 and tokens[0] == tokens[1] != tokens[2]

    apns_server.expired_up_to = clock.now() + timedelta(hours=1)  # every token refused
    error = raises_exactly(PermanentSendError, lambda: apns.send(offer(clock, DEVICE)))
    assert "ExpiredProviderToken" in str(error)
    assert len(apns_server.seen) == 5


def apns_answer(status: int, reason: str, retry_after: str | None = None) -> Answer:
    body: dict[str, Any] = {"reason": reason}
    if status == 410:
        body["timestamp"] = 1_763_000_000_000
    return Answer(status, body, {"Retry-After": retry_after} if retry_after else {})


APNS_ERRORS = {
    "410-unregistered": (apns_answer(410, "Unregistered"), TokenUnregistered, None),
    "410-expired-token": (apns_answer(410, "ExpiredToken"), TokenUnregistered, None),
    "400-device-not-for-topic": (
        apns_answer(400, "DeviceTokenNotForTopic"),
        TokenUnregistered,
        None,
    ),
    "400-payload-empty": (apns_answer(400, "PayloadEmpty"), PermanentSendError, None),
    "403-invalid-provider-token": (
        apns_answer(403, "InvalidProviderToken"),
        PermanentSendError,
        None,
    ),
    "413-payload-too-large": (apns_answer(413, "PayloadTooLarge"), PermanentSendError, None),
    "429-too-many-requests": (apns_answer(429, "TooManyRequests", "5"), RateLimited, 5.0),
    "500-internal": (apns_answer(500, "InternalServerError"), ProviderUnavailable, None),
    "503-unavailable": (
        apns_answer(503, "ServiceUnavailable", "60"),
        ProviderUnavailable,
        60.0,
    ),
}


@pytest.mark.parametrize("case", APNS_ERRORS, ids=list(APNS_ERRORS))
def test_apns_documented_errors_are_classified(
    case: str, apns: ApnsChannel, apns_server: FakeApns, clock: ManualClock
) -> None:
    answer, expected, retry_after = APNS_ERRORS[case]
    apns_server.script(DEVICE, answer)
    raises_exactly(expected, lambda: apns.send(offer(clock, DEVICE)), retry_after)
    assert len(apns_server.seen) == 1


def test_apns_malformed_device_token_is_unregistered(
    apns: ApnsChannel, apns_server: FakeApns, clock: ManualClock
) -> None:
    raises_exactly(TokenUnregistered, lambda: apns.send(offer(clock, "not-a-device-token")))
    assert apns_server.seen[0].path == "/3/device/not-a-device-token"


def test_apns_wrong_topic_is_permanent_not_a_dead_token(
    apns_server: FakeApns, apns_http: httpx.Client, keys: Keys, clock: ManualClock
) -> None:
    apns_server.reset(clock)
    channel = ApnsChannel(
        TEAM_ID, APNS_KEY_ID, pem(keys.apns), "com.example.other", apns_server.base_url, apns_http
    )
    error = raises_exactly(PermanentSendError, lambda: channel.send(offer(clock, DEVICE)))
    assert "TopicDisallowed" in str(error)


def test_apns_unreachable_is_transient(keys: Keys, apns_http: httpx.Client) -> None:
    channel = ApnsChannel(
        TEAM_ID, APNS_KEY_ID, pem(keys.apns), BUNDLE, closed_port_url("https"), apns_http
    )
    clock = ManualClock()
    raises_exactly(TransientSendError, lambda: channel.send(offer(clock, DEVICE)))


# --- Web Push (VAPID, aes128gcm) ---------------------------------------------------------------


def test_webpush_payload_decrypts_with_the_subscription_key_and_headers_follow_rfc8030(
    webpush: WebPushChannel, webpush_server: FakeWebPush, keys: Keys, clock: ManualClock
) -> None:
    subscriber = webpush_server.subscribe()
    message = offer(clock, json.dumps(subscriber.subscription))
    receipt = webpush.send(message)

    [seen] = webpush_server.seen
    assert receipt.provider_id.startswith(f"{webpush_server.base_url}/message/")
    assert seen.path == f"/push/{subscriber.id}"
    assert seen.headers["ttl"] == str(TTL)
    assert seen.headers["urgency"] == "high"
    assert seen.headers["topic"] == collapse_token(message)
    assert seen.headers["content-encoding"] == "aes128gcm"
    assert seen.decoded == {  # decrypted by the server with the browser's private key
        "title": message.title,
        "body": message.body,
        "code": "K7Q-4MX",
        "expires_at": message.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "discount_text": "2 for 1",
        "store_name": "Bold Street",
        "idempotency_key": "cpn_01HZX4:push",
    }
    [claims] = webpush_server.vapid_claims
    assert claims["aud"] == webpush_server.base_url
    assert claims["sub"] == "mailto:push@example.com"
    assert claims["exp"] == int(clock.now().timestamp()) + 12 * 3600
    assert claims["_k"] == webpush.application_server_key
    public = keys.vapid.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert webpush.application_server_key == jwt.utils.base64url_encode(public).decode()


WEBPUSH_ERRORS = {
    "404-gone": (Answer(404, b"Not Found"), TokenUnregistered, None),
    "410-gone": (Answer(410, b"Gone"), TokenUnregistered, None),
    "400-bad-request": (Answer(400, b"Bad Request"), PermanentSendError, None),
    "413-too-large": (Answer(413, b"Payload Too Large"), PermanentSendError, None),
    "429-rate": (Answer(429, b"", {"Retry-After": "10"}), RateLimited, 10.0),
    "503-unavailable": (Answer(503, b"", {"Retry-After": "3"}), ProviderUnavailable, 3.0),
    "500-error": (Answer(500, b""), ProviderUnavailable, None),
}


@pytest.mark.parametrize("case", WEBPUSH_ERRORS, ids=list(WEBPUSH_ERRORS))
def test_webpush_push_service_errors_are_classified(
    case: str, webpush: WebPushChannel, webpush_server: FakeWebPush, clock: ManualClock
) -> None:
    answer, expected, retry_after = WEBPUSH_ERRORS[case]
    subscriber = webpush_server.subscribe()
    webpush_server.script(subscriber.id, answer)
    address = json.dumps(subscriber.subscription)
    raises_exactly(expected, lambda: webpush.send(offer(clock, address)), retry_after)


def test_webpush_retry_after_as_an_http_date(
    webpush: WebPushChannel, webpush_server: FakeWebPush, clock: ManualClock
) -> None:
    subscriber = webpush_server.subscribe()
    webpush_server.script(
        subscriber.id, Answer(429, b"", {"Retry-After": http_date_in(45)(clock.now())})
    )
    address = json.dumps(subscriber.subscription)
    raises_exactly(RateLimited, lambda: webpush.send(offer(clock, address)), 45.0)


def test_webpush_unsubscribed_endpoint_is_unregistered(
    webpush: WebPushChannel, webpush_server: FakeWebPush, clock: ManualClock
) -> None:
    subscriber = webpush_server.subscribe()
    del webpush_server.subscribers[subscriber.id]  # the browser unsubscribed
    address = json.dumps(subscriber.subscription)
    raises_exactly(TokenUnregistered, lambda: webpush.send(offer(clock, address)))


@pytest.mark.parametrize(
    "address",
    [
        "not json",
        json.dumps({"endpoint": "https://push.example/x"}),
        json.dumps({"endpoint": "https://push.example/x", "keys": {"p256dh": "AAAA", "auth": "x"}}),
    ],
    ids=["not-json", "no-keys", "bad-p256dh"],
)
def test_webpush_unusable_subscription_is_permanent_and_sends_nothing(
    address: str, webpush: WebPushChannel, webpush_server: FakeWebPush, clock: ManualClock
) -> None:
    raises_exactly(PermanentSendError, lambda: webpush.send(offer(clock, address)))
    assert webpush_server.seen == []


def test_webpush_unreachable_is_transient(
    webpush: WebPushChannel, webpush_server: FakeWebPush, clock: ManualClock
) -> None:
    subscription = dict(webpush_server.subscribe().subscription)
    subscription["endpoint"] = f"{closed_port_url()}/push/x"
    address = json.dumps(subscription)
    raises_exactly(TransientSendError, lambda: webpush.send(offer(clock, address)))


# --- signed webhook ----------------------------------------------------------------------------


def test_webhook_is_signed_and_carries_the_idempotency_key(
    webhook: WebhookChannel, webhook_server: FakeWebhookReceiver, clock: ManualClock
) -> None:
    message = offer(clock, "shopper-42", key="cpn_9:webhook")
    receipt = webhook.send(message)

    [seen] = webhook_server.seen
    assert receipt.provider_id == "webhook 202: req-1"
    assert seen.headers["idempotency-key"] == "cpn_9:webhook"
    assert seen.headers["content-type"] == "application/json"
    signature = seen.headers[SIGNATURE_HEADER.lower()]
    assert signature.startswith(f"t={int(clock.now().timestamp())},v1=")
    assert verify_webhook_signature(WEBHOOK_SECRET, signature, seen.body, clock.now())
    assert not verify_webhook_signature(WEBHOOK_SECRET, signature, seen.body + b" ", clock.now())
    assert seen.decoded["code"] == "K7Q-4MX"
    assert seen.decoded["recipient"] == "shopper-42"
    assert seen.decoded["ttl_s"] == TTL


def test_webhook_with_the_wrong_secret_is_refused_permanently(
    webhook_server: FakeWebhookReceiver, clock: ManualClock
) -> None:
    webhook_server.reset(clock)
    with httpx.Client(timeout=5, trust_env=False) as http:
        url = f"{webhook_server.base_url}/hooks/offers"
        channel = WebhookChannel(url, "not-the-brand-secret", http=http, clock=clock)
        raises_exactly(PermanentSendError, lambda: channel.send(offer(clock, "shopper-42")))
    assert webhook_server.seen[0].decoded is None  # rejected before the body was read


WEBHOOK_ERRORS = {
    "410-gone": (Answer(410), TokenUnregistered, None),
    "400-bad-request": (Answer(400, {"error": "unknown store"}), PermanentSendError, None),
    "429-rate": (Answer(429, None, {"Retry-After": "15"}), RateLimited, 15.0),
    "503-unavailable": (Answer(503, None, {"Retry-After": "2"}), ProviderUnavailable, 2.0),
    "500-error": (Answer(500), ProviderUnavailable, None),
}


@pytest.mark.parametrize("case", WEBHOOK_ERRORS, ids=list(WEBHOOK_ERRORS))
def test_webhook_answers_are_classified(
    case: str, webhook: WebhookChannel, webhook_server: FakeWebhookReceiver, clock: ManualClock
) -> None:
    answer, expected, retry_after = WEBHOOK_ERRORS[case]
    webhook_server.script("cpn_01HZX4:push", answer)
    raises_exactly(expected, lambda: webhook.send(offer(clock, "shopper-42")), retry_after)


def test_webhook_unreachable_is_transient(clock: ManualClock) -> None:
    with httpx.Client(timeout=2, trust_env=False) as http:
        channel = WebhookChannel(f"{closed_port_url()}/hook", WEBHOOK_SECRET, http=http)
        raises_exactly(TransientSendError, lambda: channel.send(offer(clock, "shopper-42")))
