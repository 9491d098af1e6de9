"""An engine over HTTP for tests: a runtime on the chosen stack, a manual clock, a real SMTP
server, and helpers that speak the public API the way a client would."""

from __future__ import annotations

import queue
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from api.runtime import Runtime
from core.clock import ManualClock
from core.settings import INSECURE_KEYS
from notify.email import SmtpEmailChannel
from offers.delivery import DeliveryReport
from tests.conftest import SmtpInbox, Stack

MANAGER = {"X-API-Key": INSECURE_KEYS["manager"]}
POS = {"X-API-Key": INSECURE_KEYS["pos"]}
SDK_KEY = {"X-API-Key": INSECURE_KEYS["sdk"]}
STORE_LON, STORE_LAT = 24.9414, 60.1699  # a street corner in central Helsinki
INSIDE = (STORE_LON, STORE_LAT)
OUTSIDE = (STORE_LON + 0.01, STORE_LAT)  # about 550 m east


class Engine:
    """The engine as its users see it."""

    def __init__(
        self, runtime: Runtime, client: TestClient, clock: ManualClock, inbox: SmtpInbox
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.clock = clock
        self.inbox = inbox
        self.reports: queue.Queue[DeliveryReport] = queue.Queue()
        runtime.worker.listeners.append(self.reports.put)

    # manager
    def create_store(
        self,
        lon: float = STORE_LON,
        lat: float = STORE_LAT,
        radius_m: float = 50,
        name: str = "Corner Cafe",
    ) -> dict[str, Any]:
        response = self.client.post(
            "/v1/manager/stores",
            headers=MANAGER,
            json={
                "name": name,
                "timezone": "Europe/Helsinki",
                "fence": {"lon": lon, "lat": lat, "radius_m": radius_m},
            },
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def create_campaign(
        self, store_ids: list[str], valid_minutes: int = 15, cap: int = 1, **extra: Any
    ) -> dict[str, Any]:
        response = self.client.post(
            "/v1/manager/campaigns",
            headers=MANAGER,
            json={
                "name": extra.pop("name", "Coffee now"),
                "store_ids": store_ids,
                "daily_cap_per_shopper": cap,
                "offer": {
                    "title": "Coffee break",
                    "body": "Pop in for a coffee.",
                    "discount_text": "30% off",
                    "valid_minutes": valid_minutes,
                },
                **extra,
            },
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def publish_notices(self, version: str = "n-1") -> None:
        for purpose in ("location_tracking", "marketing_offers"):
            response = self.client.post(
                "/v1/manager/notices",
                headers=MANAGER,
                json={
                    "purpose": purpose,
                    "version": version,
                    "text": f"We use {purpose} for offers.",
                },
            )
            assert response.status_code == 201, response.text

    # sdk
    def register(
        self, email: str | None = "shopper@example.com", customer: str = "cust-1"
    ) -> dict[str, str]:
        response = self.client.post(
            "/v1/sdk/devices",
            headers=SDK_KEY,
            json={"customer_ref": customer, "platform": "android", "email": email},
        )
        assert response.status_code == 201, response.text
        body = dict(response.json())
        body["auth"] = {"Authorization": f"Bearer {body['token']}"}  # type: ignore[assignment]
        return body

    def consent(
        self, device: dict[str, Any], purpose: str, granted: bool = True, channel: str | None = None
    ) -> dict[str, Any]:
        response = self.client.post(
            "/v1/sdk/consents",
            headers=device["auth"],
            json={
                "purpose": purpose,
                "channel": channel,
                "granted": granted,
                "notice_version": "n-1",
            },
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def shopper(
        self,
        *,
        location: bool = True,
        offers_by_email: bool = True,
        email: str = "shopper@example.com",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """A registered device whose owner gave the consents; offers by email are confirmed the
        way a person does it: by following the link in the confirmation email the SMTP server
        received."""
        device = self.register(email=email, **kwargs)
        device["email"] = email
        if location:
            self.consent(device, "location_tracking")
        if offers_by_email:
            pending = self.consent(device, "marketing_offers", channel="email")
            assert pending["state"] == "pending_confirmation", pending
            confirmed = self.follow(self.confirmation_link(email))
            assert confirmed.status_code == 200, confirmed.text
            assert confirmed.json()["state"] == "confirmed", confirmed.text
        return device

    def confirmation_link(self, address: str) -> str:
        """The link in the latest confirmation email to ``address`` (taken from the inbox)."""
        message = self.inbox.take(
            lambda m: m["X-Offer-Engine-Kind"] == "consent-confirmation" and m["To"] == address
        )
        text = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
        [link] = re.findall(r"https?://\S+/v1/consent/confirm\?token=\S+", text)
        return str(link)

    def follow(self, link: str, method: str = "GET", **kwargs: Any) -> Any:
        """Open a link from an email against this engine (path and query of the link)."""
        parts = urlsplit(link)
        return self.client.request(method, f"{parts.path}?{parts.query}", **kwargs)

    def smtp_goes_down(self) -> None:
        """From now on offer email meets a closed port (the shopper is already confirmed)."""
        settings = self.runtime.settings
        self.runtime.channels["email"] = SmtpEmailChannel("127.0.0.1", 1, settings.email_from, 1)

    def ping(
        self,
        device: dict[str, Any],
        point: tuple[float, float],
        at: datetime | None = None,
        accuracy_m: float | None = 10,
    ) -> Any:
        return self.client.post(
            "/v1/sdk/pings",
            headers=device["auth"],
            json={
                "pings": [
                    {
                        "lon": point[0],
                        "lat": point[1],
                        "accuracy_m": accuracy_m,
                        "recorded_at": (at or self.clock.now()).isoformat(),
                    }
                ]
            },
        )

    # pos
    def redeem(self, code: str, store_id: str) -> Any:
        return self.client.post(
            "/v1/pos/redemptions", headers=POS, json={"code": code, "store_id": store_id}
        )

    # inspection
    def count(self, model: type[Any], *where: Any) -> int:
        with self.runtime.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    def next_report(self, timeout: float = 10.0) -> DeliveryReport:
        return self.reports.get(timeout=timeout)


EngineFactory = Callable[..., Engine]


@pytest.fixture
def make_engine_api(
    stack: Stack, smtp: tuple[SmtpInbox, int], clock: ManualClock
) -> Iterator[EngineFactory]:
    """Build (and afterwards stop) engines on this test's stack; settings may be overridden."""
    inbox, port = smtp
    built: list[tuple[Runtime, TestClient]] = []

    def factory(publish: bool = True, **overrides: Any) -> Engine:
        """A runtime on this test's database; ``publish=False`` for a further process on a
        database whose notices are already published."""
        settings = stack.settings(**{"smtp_port": port, **overrides})
        runtime = Runtime.build(settings, clock=clock)
        runtime.start()
        client = TestClient(create_app(runtime=runtime))
        built.append((runtime, client))
        engine = Engine(runtime, client, clock, inbox)
        if publish:
            engine.publish_notices()
        return engine

    yield factory
    for runtime, client in built:
        client.close()
        runtime.stop()


@pytest.fixture
def engine_api(make_engine_api: EngineFactory) -> Engine:
    return make_engine_api()
