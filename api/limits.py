"""What every request meets before its route: a body size limit, CORS, and rate limits."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import key_label, read_device_token
from api.errors import ErrorResponse
from api.runtime import Runtime
from core.errors import Unauthenticated
from core.ratelimit import RateLimiter, Subjects
from core.settings import Settings

ROUTE_CLASSES = (
    ("/v1/sdk/pings", "pings"),
    ("/v1/pos/", "redemptions"),
    ("/v1/manager/", "manager"),
    ("/v1/compliance/", "manager"),
)
UPLOAD_PATHS = ("/v1/manager/stores/import",)

# Answers any route may give on top of its own: documented once per router.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "The request body is larger than allowed"},
    429: {
        "model": ErrorResponse,
        "description": "Rate limit reached; the Retry-After header says when to try again",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
}


def route_class(path: str) -> str:
    for prefix, name in ROUTE_CLASSES:
        if path.startswith(prefix):
            return name
    return "default"


def _bearer(request: Request) -> str | None:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def request_subjects(request: Request, device_id: str | None) -> Subjects:
    """Who a request counts against: the key's visible id (or a digest of it, never the key
    itself), the device and the client's address."""
    presented = request.headers.get("x-api-key")
    return Subjects(
        key_id=key_label(presented) if presented else None,
        device_id=device_id,
        ip=request.client.host if request.client else None,
    )


def _count(request: Request, route: str) -> None:
    runtime: Runtime = request.app.state.runtime
    limiter: RateLimiter = request.app.state.limiter
    device_id = None
    token = _bearer(request)
    if token:
        try:  # only a genuine token counts against its device; the route rejects the rest
            device_id = read_device_token(runtime.settings, token, runtime.clock.now()).device_id
        except Unauthenticated:
            device_id = None
    limiter.hit(route, request_subjects(request, device_id))


async def enforce_rate_limits(request: Request) -> None:
    """Count the request against its API key, device and client address. Pings are counted
    by their route, in the same round trip as the rest of their group (``api.ping_groups``):
    a ping carrying no genuine device token is refused by its signature check alone."""
    route = route_class(request.scope["path"])  # not request.url: no URL object built
    if route == "pings":
        return
    await run_in_threadpool(_count, request, route)


RateLimitDep = Depends(enforce_rate_limits)


class PayloadTooLarge(StarletteHTTPException):
    """Raised from inside the body stream; an HTTP exception, so the route's body parsing passes
    it on and the error handlers answer 413 in the usual error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


def too_large_message(limit: int) -> str:
    return f"the request body is larger than the {limit} bytes allowed here"


class BodySizeLimit:
    """Refuses bodies over the limit with 413: at once from Content-Length, or while the body
    streams in (chunked uploads carry no length), before the route has acted on any of it."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limit = self.upload_bytes if path.startswith(UPLOAD_PATHS) else self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _refuse(send, limit)
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except PayloadTooLarge:
            if started:
                raise
            await _refuse(send, limit)


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "payload_too_large",
                "message": too_large_message(limit),
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def allowed_origins(settings: Settings) -> list[str]:
    if settings.cors_origins is not None:
        return list(settings.cors_origins)
    parts = urlsplit(settings.public_base_url)
    return [f"{parts.scheme}://{parts.netloc}"]


def install_limits(app: FastAPI, runtime: Runtime) -> None:
    settings = runtime.settings
    app.state.limiter = RateLimiter(
        runtime.state, runtime.clock, settings.rate_limits, settings.rate_limit_window_s
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=allowed_origins(settings),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-API-Key", "Idempotency-Key"],
        max_age=600,
    )
    # Added last, so it runs first: an oversized body is refused before anything else reads it.
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, upload_bytes=settings.max_upload_bytes
    )
