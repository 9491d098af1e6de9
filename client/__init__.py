"""A typed Python client of the Offer Engine's HTTP API (httpx + pydantic; no server code).

    with OfferEngineClient("http://127.0.0.1:8000", sdk_key=KEY) as engine:
        device = engine.sdk.register_device("customer-42", "android")
        device.give_consent("location_tracking", notice_version="n-1")
        result = device.send_pings([Ping(lon=24.94, lat=60.17, recorded_at=now)])

Pass ``http=`` an ``httpx.Client`` or FastAPI's ``TestClient`` to talk to an app in-process.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from client.api import DeviceSession, ManagerApi, PosApi, SdkApi, new_idempotency_key
from client.errors import ApiError
from client.models import Ping
from client.transport import NO_RETRY, RetryPolicy, Transport


class OfferEngineClient:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        http: Any = None,
        sdk_key: str | None = None,
        manager_key: str | None = None,
        pos_key: str | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if http is None:
            if base_url is None:
                raise ValueError("give the engine's base_url, or an httpx client (http=)")
            http = httpx.Client(base_url=base_url, timeout=timeout_s)
            self._owns_http = True
        else:
            self._owns_http = False
        self.http = http
        self.transport = Transport(http, retry)
        self.sdk = SdkApi(self.transport, sdk_key)
        self.manager = ManagerApi(self.transport, manager_key)
        self.pos = PosApi(self.transport, pos_key)

    def health(self) -> dict[str, str]:
        body: dict[str, str] = self.transport.call("GET", "/health").json()
        return body

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> OfferEngineClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "NO_RETRY",
    "ApiError",
    "DeviceSession",
    "ManagerApi",
    "OfferEngineClient",
    "Ping",
    "PosApi",
    "RetryPolicy",
    "SdkApi",
    "new_idempotency_key",
]
