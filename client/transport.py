"""One HTTP call with the client's retry rules.

Retried: a request that never reached the server (connect errors), and answers that say "try
again" (429, 502, 503, 504, after ``Retry-After`` when given, capped), but only for calls that are
safe to repeat: GET, PUT, and writes the engine deduplicates (pings with ids, the opened
callback, redemptions with an Idempotency-Key). Every write carries an ``Idempotency-Key``; a
retry sends the same one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from client.errors import ApiError

RETRY_STATUSES = frozenset({429, 502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "PUT"})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_s: float = 0.25  # doubles each attempt
    max_wait_s: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep)

    def wait(self, attempt: int, response: httpx.Response | None) -> float:
        delay = self.backoff_s * (2**attempt)
        if response is not None:
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.strip().isdigit():
                delay = float(retry_after)
        return float(min(delay, self.max_wait_s))


NO_RETRY = RetryPolicy(attempts=1)


class Transport:
    """``http``: an ``httpx.Client``, or any client with its ``request()`` (FastAPI's
    ``TestClient`` for an app in this process)."""

    def __init__(self, http: Any, retry: RetryPolicy | None = None) -> None:
        self.http = http
        self.retry = retry or RetryPolicy()

    def call(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        files: Any = None,
        idempotent: bool | None = None,
        idempotency_key: str | None = None,
        expect: tuple[int, ...] = (200, 201),
    ) -> httpx.Response:
        """Send, retrying when safe; return the response for an expected status, else raise
        ``ApiError`` (or the last transport error)."""
        method = method.upper()
        send_headers = dict(headers or {})
        if method not in SAFE_METHODS:
            send_headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        safe = method in SAFE_METHODS if idempotent is None else idempotent
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            last = attempt >= self.retry.attempts - 1
            try:
                response: httpx.Response = self.http.request(
                    method, path, headers=send_headers, json=json, params=clean_params, files=files
                )
            except httpx.ConnectError:
                if last:  # never reached the server: safe to try again whatever the method
                    raise
            except httpx.TransportError:
                if last or not safe:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or last or not safe:
                    if response.status_code in expect:
                        return response
                    raise _error(response)
                self.retry.sleep(self.retry.wait(attempt, response))
                attempt += 1
                continue
            self.retry.sleep(self.retry.wait(attempt, None))
            attempt += 1


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return ApiError.from_response(response.status_code, body, response.text)
