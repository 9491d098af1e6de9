"""Local stand-ins for FCM, APNs, a Web Push service and a brand's webhook receiver.

FCM, APNs and the browsers' push services cannot be reached from here, so these servers follow
the providers' DOCUMENTED request formats and error bodies instead:

- FCM HTTP v1 (firebase.google.com/docs/reference/fcm/rest/v1/projects.messages/send and
  .../ErrorCode) and Google's OAuth 2.0 service-account flow (RFC 7523 JWT bearer grant);
- APNs provider API (developer.apple.com "Sending notification requests to APNs" and
  "Handling notification responses from APNs"): HTTP/2 only, token-based auth;
- Web Push: RFC 8030 (TTL, Urgency, Topic), RFC 8291 (aes128gcm payload encryption),
  RFC 8292 (VAPID);
- the engine's own webhook contract (notify/webhook.py).

Each server checks what the real one checks and answers with the real error for it; a test can
also queue a documented answer for one address (``script``) to drive the error paths. Servers
run under hypercorn in a thread, on 127.0.0.1 ports the OS picks; APNs over TLS with a test CA
(httpx speaks HTTP/2 only over TLS with ALPN).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
import socket
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import http_ece
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.clock import ManualClock
from notify.webhook import SIGNATURE_HEADER, verify_webhook_signature

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    http_version: str
    headers: dict[str, str]
    body: bytes
    decoded: Any = None  # JSON body, form, or decrypted Web Push payload


@dataclass
class Answer:
    status: int
    body: Any = None  # dict -> JSON, bytes/str -> as is, None -> empty
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        if isinstance(self.body, dict):
            return JSONResponse(self.body, self.status, headers=self.headers)
        return Response(self.body or b"", self.status, headers=self.headers)


class FakeProvider:
    """Records requests; serves queued answers per address before its own default."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.seen: list[Seen] = []
        self._script: dict[str, deque[Answer]] = defaultdict(deque)

    def reset(self, clock: ManualClock) -> None:
        self.clock = clock
        self.seen.clear()
        self._script.clear()

    def script(self, address: str, *answers: Answer) -> None:
        self._script[address].extend(answers)

    def _scripted(self, address: str) -> Answer | None:
        queue = self._script.get(address)
        return queue.popleft() if queue else None

    async def _record(self, request: Request, decoded: Any = None) -> Seen:
        seen = Seen(
            path=request.url.path,
            http_version=str(request.scope.get("http_version")),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            decoded=decoded,
        )
        self.seen.append(seen)
        return seen


FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def fcm_error(
    code: int,
    status: str,
    error_code: str | None = None,
    message: str = "",
    field: str | None = None,
) -> dict[str, Any]:
    """An FCM v1 error body as documented (google.rpc.Status with an FcmError detail)."""
    details: list[dict[str, Any]] = []
    if error_code:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": error_code})
    if field:
        violation = {"field": field, "description": message}
        details.append({"@type": BAD_REQUEST_TYPE, "fieldViolations": [violation]})
    body: dict[str, Any] = {"code": code, "message": message or status, "status": status}
    if details:
        body["details"] = details
    return {"error": body}


class FakeFcm(FakeProvider):
    """Google's token endpoint (``/token``) and FCM ``messages:send``."""

    def __init__(
        self, clock: ManualClock, project_id: str, client_email: str, key_id: str, public_key: Any
    ) -> None:
        super().__init__(clock)
        self.project_id, self.client_email, self.key_id = project_id, client_email, key_id
        self.public_key = public_key
        self.base_url = ""
        self.assertions: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (header, claims)
        self.access_tokens: set[str] = set()
        self.reject_every_token = False
        self.app = Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/v1/projects/{project}/messages:send", self._send, methods=["POST"]),
            ]
        )

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def reset(self, clock: ManualClock) -> None:
        super().reset(clock)
        self.assertions.clear()
        self.access_tokens.clear()
        self.reject_every_token = False

    def revoke_access_tokens(self) -> None:
        self.access_tokens.clear()

    async def _token(self, request: Request) -> Response:
        raw = await request.body()
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        await self._record(request, form)
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return JSONResponse({"error": "invalid_request"}, 400)
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        assertion = form.get("assertion", "")
        invalid = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self.public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"verify_exp": False, "verify_iat": False},  # checked on self.clock
            )
        except jwt.PyJWTError:
            return JSONResponse(invalid, 400)
        self.assertions.append((header, claims))
        now = self.clock.now().timestamp()
        if not (
            header.get("kid") == self.key_id
            and claims.get("iss") == self.client_email
            and FCM_SCOPE in str(claims.get("scope", "")).split()
            and claims["iat"] <= now + 60
            and now < claims["exp"] <= claims["iat"] + 3600
        ):
            invalid["error_description"] = "Invalid JWT: bad claims or expired"
            return JSONResponse(invalid, 400)
        token = f"ya29.fake-{uuid.uuid4().hex}"
        self.access_tokens.add(token)
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    async def _send(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        await self._record(request, body)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.reject_every_token or bearer not in self.access_tokens:
            return JSONResponse(
                fcm_error(401, "UNAUTHENTICATED", message="Request had invalid authentication"),
                401,
            )
        if request.path_params["project"] != self.project_id:
            return JSONResponse(fcm_error(403, "PERMISSION_DENIED", message="no such project"), 403)
        problem = _fcm_message_problem(body)
        if problem is not None:
            return JSONResponse(
                fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", **problem), 400
            )
        message = body["message"]
        answer = self._scripted(message["token"])
        if answer is not None:
            return answer.response()
        name = f"projects/{self.project_id}/messages/0:{uuid.uuid4().hex[:16]}"
        return JSONResponse({"name": name})


def _fcm_message_problem(body: Any) -> dict[str, str] | None:
    """What FCM v1 would refuse with 400 INVALID_ARGUMENT (a subset of its validation)."""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        return {"field": "message", "message": "Invalid JSON payload received."}
    if not message.get("token"):
        return {"field": "message.token", "message": "Recipient of the message is not set."}
    for key, value in (message.get("data") or {}).items():
        if not isinstance(value, str):
            return {"field": f"message.data[{key}].value", "message": "Invalid value"}
    ttl = (message.get("android") or {}).get("ttl")
    if ttl is not None and not re.fullmatch(r"\d+(\.\d{1,9})?s", str(ttl)):
        return {"field": "message.android.ttl", "message": "Invalid duration"}
    return None


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_TOKEN = re.compile(r"[0-9a-fA-F]{64,200}")


class FakeApns(FakeProvider):
    """APNs ``POST /3/device/<token>`` (HTTP/2, token auth)."""

    def __init__(
        self, clock: ManualClock, team_id: str, key_id: str, public_key: Any, topic: str
    ) -> None:
        super().__init__(clock)
        self.team_id, self.key_id, self.public_key, self.topic = team_id, key_id, public_key, topic
        self.base_url = ""
        self.provider_tokens: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.expired_up_to: datetime | None = None  # tokens issued at or before: expired
        self.app = Starlette(routes=[Route("/3/device/{token}", self._push, methods=["POST"])])

    def reset(self, clock: ManualClock) -> None:
        super().reset(clock)
        self.provider_tokens.clear()
        self.expired_up_to = None

    async def _push(self, request: Request) -> Response:
        raw = await request.body()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        await self._record(request, payload)
        reason = self._auth_problem(request) or self._header_problem(request)
        if reason is not None:
            return _apns_error(403 if "ProviderToken" in reason else 400, reason)
        if len(raw) > 4096:
            return _apns_error(413, "PayloadTooLarge")
        if not isinstance(payload, dict) or "aps" not in payload:
            return _apns_error(400, "PayloadEmpty")
        device = request.path_params["token"]
        if not _HEX_TOKEN.fullmatch(device):
            return _apns_error(400, "BadDeviceToken")
        answer = self._scripted(device)
        if answer is not None:
            return answer.response()
        return Response(b"", 200, headers={"apns-id": request.headers["apns-id"]})

    def _auth_problem(self, request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "MissingProviderToken"
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token, self.public_key, algorithms=["ES256"], options={"verify_iat": False}
            )
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        self.provider_tokens.append((header, claims))
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return "InvalidProviderToken"
        issued = datetime.fromtimestamp(int(claims["iat"]), UTC)
        too_old = self.clock.now() - issued > timedelta(hours=1)
        if too_old or (self.expired_up_to is not None and issued <= self.expired_up_to):
            return "ExpiredProviderToken"
        return None

    def _header_problem(self, request: Request) -> str | None:
        h = request.headers
        checks: list[tuple[bool, str]] = [
            ("apns-topic" in h, "MissingTopic"),
            (h.get("apns-topic") == self.topic, "TopicDisallowed"),
            (h.get("apns-push-type") in ("alert", "background"), "InvalidPushType"),
            (h.get("apns-priority", "10") in ("5", "10"), "BadPriority"),
            (h.get("apns-expiration", "0").isdigit(), "BadExpirationDate"),
            (len(h.get("apns-collapse-id", "").encode()) <= 64, "BadCollapseId"),
            (_UUID.fullmatch(h.get("apns-id", "")) is not None, "BadMessageId"),
        ]
        return next((reason for ok, reason in checks if not ok), None)


def _apns_error(status: int, reason: str, **extra: Any) -> Response:
    return JSONResponse({"reason": reason, **extra}, status)


@dataclass
class FakeSubscriber:
    """A browser's push subscription: the keys it gave the push service."""

    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    subscription: dict[str, Any]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeWebPush(FakeProvider):
    """A push service endpoint per subscription (RFC 8030 + 8291 + 8292)."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.base_url = ""
        self.subscribers: dict[str, FakeSubscriber] = {}
        self.vapid_claims: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/push/{sub}", self._push, methods=["POST"])])

    def reset(self, clock: ManualClock) -> None:
        super().reset(clock)
        self.vapid_claims.clear()

    def subscribe(self) -> FakeSubscriber:
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        auth = uuid.uuid4().bytes
        sub_id = uuid.uuid4().hex
        subscription = {
            "endpoint": f"{self.base_url}/push/{sub_id}",
            "keys": {"p256dh": _b64url(public), "auth": _b64url(auth)},
        }
        subscriber = FakeSubscriber(sub_id, key, auth, subscription)
        self.subscribers[sub_id] = subscriber
        return subscriber

    async def _push(self, request: Request) -> Response:
        seen = await self._record(request)
        subscriber = self.subscribers.get(request.path_params["sub"])
        if subscriber is None:
            return Response(b"subscription expired or unsubscribed", 410)
        if not self._vapid_ok(request.headers.get("authorization", "")):
            return Response(b"VAPID authorization missing or invalid", 401)
        h = request.headers
        topic = h.get("topic", "")
        if not h.get("ttl", "").isdigit():
            return Response(b"TTL header missing", 400)
        if h.get("urgency", "normal") not in ("very-low", "low", "normal", "high"):
            return Response(b"bad Urgency", 400)
        if topic and (len(topic) > 32 or not re.fullmatch(r"[A-Za-z0-9_-]+", topic)):
            return Response(b"bad Topic", 400)
        if h.get("content-encoding") != "aes128gcm":
            return Response(b"Content-Encoding must be aes128gcm", 415)
        try:
            plain = http_ece.decrypt(
                seen.body,
                private_key=subscriber.private_key,
                auth_secret=subscriber.auth_secret,
                version="aes128gcm",
            )
        except Exception:
            return Response(b"payload cannot be decrypted", 400)
        seen.decoded = json.loads(plain)
        answer = self._scripted(subscriber.id)
        if answer is not None:
            return answer.response()
        location = f"{self.base_url}/message/{uuid.uuid4().hex}"
        return Response(b"", 201, headers={"Location": location})

    def _vapid_ok(self, authorization: str) -> bool:
        scheme, _, params = authorization.partition(" ")
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        if scheme.lower() != "vapid" or "t" not in parts or "k" not in parts:
            return False
        public = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), _b64url_decode(parts["k"])
        )
        try:
            claims = jwt.decode(
                parts["t"],
                public,
                algorithms=["ES256"],
                audience=self.base_url,
                options={"verify_exp": False},
            )
        except jwt.PyJWTError:
            return False
        claims["_k"] = parts["k"]
        self.vapid_claims.append(claims)
        now = self.clock.now().timestamp()
        return str(claims.get("sub", "")).startswith(("mailto:", "https:")) and (
            now < claims["exp"] <= now + 24 * 3600
        )


class FakeWebhookReceiver(FakeProvider):
    """A brand's endpoint that checks the signature the way notify/webhook.py documents."""

    def __init__(self, clock: ManualClock, secret: str) -> None:
        super().__init__(clock)
        self.secret = secret
        self.base_url = ""
        self.app = Starlette(routes=[Route("/hooks/offers", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        seen = await self._record(request)
        header = request.headers.get(SIGNATURE_HEADER)
        if not verify_webhook_signature(self.secret, header, seen.body, self.clock.now()):
            return JSONResponse({"error": "bad signature"}, 401)
        seen.decoded = json.loads(seen.body)
        answer = self._scripted(request.headers.get("idempotency-key", ""))
        if answer is not None:
            return answer.response()
        return JSONResponse({"ok": True}, 202, headers={"X-Request-Id": "req-1"})


@dataclass(frozen=True)
class LocalCa:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_test_ca(directory: Path) -> LocalCa:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("offer-engine test CA"))
        .issuer_name(name("offer-engine test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = LocalCa(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    paths.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@contextmanager
def serve_in_thread(app: Callable[..., Any], tls: LocalCa | None = None) -> Iterator[str]:
    """Run ``app`` under hypercorn on a free 127.0.0.1 port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue from here on: no start-up race
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 0.5
    config.errorlog = None
    if tls is not None:
        config.certfile, config.keyfile = str(tls.cert_file), str(tls.key_file)
    started = threading.Event()
    control: dict[str, Any] = {}

    async def main() -> None:
        control["loop"], control["stop"] = asyncio.get_running_loop(), asyncio.Event()
        started.set()
        await serve(app, config, shutdown_trigger=control["stop"].wait)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        control["loop"].call_soon_threadsafe(control["stop"].set)
        thread.join(10)
