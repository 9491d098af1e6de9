"""Several API processes against one PostgreSQL and one Redis: real uvicorn servers in child
processes on loopback ports, one of them running the scheduler, a real SMTP server receiving
what is sent.

- The same shoppers ping the same store through every process at once: each gets exactly one
  coupon (the campaign's daily cap of one, counted atomically in Redis), one outbox row and one
  email.
- A fence created through one process is matched by every other within 2 s.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, text

from api.bench.api import served_many
from core.db import make_engine, upgrade_database
from core.settings import INSECURE_KEYS
from geo.models import FenceEvent, Ping
from offers.models import Coupon, Delivery
from tests.conftest import SmtpInbox, free_port

MANAGER = {"X-API-Key": INSECURE_KEYS["manager"]}
SDK = {"X-API-Key": INSECURE_KEYS["sdk"]}
STORE = (24.9414, 60.1699)
PROCESSES = 3
SHOPPERS = 8


class Cluster:
    def __init__(self, urls: list[str], database_url: str, inbox: SmtpInbox) -> None:
        self.urls = urls
        self.clients = [httpx.Client(base_url=u, timeout=30, trust_env=False) for u in urls]
        self.database_url = database_url
        self.inbox = inbox

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def shopper(self, n: int) -> dict[str, Any]:
        """Registered through one process, consents through the others, email confirmed."""
        a, b, c = (self.clients[(n + i) % len(self.clients)] for i in range(3))
        email = f"shopper{n}@example.com"
        device = a.post(
            "/v1/sdk/devices",
            headers=SDK,
            json={"customer_ref": f"scale-{n}", "platform": "android", "email": email},
        ).json()
        auth = {"Authorization": f"Bearer {device['token']}"}
        for purpose, channel, client in (
            ("location_tracking", None, b),
            ("marketing_offers", "email", c),
        ):
            response = client.post(
                "/v1/sdk/consents",
                headers=auth,
                json={
                    "purpose": purpose,
                    "channel": channel,
                    "granted": True,
                    "notice_version": "n-1",
                },
            )
            assert response.status_code == 201, response.text
        message = self.inbox.take(lambda m: m["To"] == email)
        body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
        [link] = re.findall(r"https?://\S+/v1/consent/confirm\?token=\S+", body)
        parts = urlsplit(link)
        confirmed = a.get(f"{parts.path}?{parts.query}")
        assert confirmed.status_code == 200, confirmed.text
        return {"auth": auth, "email": email, "subject_id": device["subject_id"]}

    def count(self, model: type[Any], *where: Any) -> int:
        engine = make_engine(self.database_url, pool_size=1, max_overflow=0)
        try:
            with engine.connect() as connection:
                query = select(func.count()).select_from(model).where(*where)
                return int(connection.execute(query).scalar() or 0)
        finally:
            engine.dispose()


def _ping(lon: float, lat: float, at: datetime) -> dict[str, Any]:
    return {"pings": [{"lon": lon, "lat": lat, "accuracy_m": 5, "recorded_at": at.isoformat()}]}


@pytest.fixture(scope="module")
def mail() -> Iterator[SmtpInbox]:
    inbox = SmtpInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    inbox.port = controller.port  # type: ignore[attr-defined]
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def cluster(postgres_available: str, redis_available: str, mail: SmtpInbox) -> Iterator[Cluster]:
    schema = f"t_{secrets.token_hex(6)}"
    admin = make_engine(postgres_available, pool_size=1, max_overflow=0)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    database_url = f"{postgres_available}?options=-csearch_path%3D{schema}"
    migrator = make_engine(database_url, pool_size=1, max_overflow=0)
    upgrade_database(migrator)
    migrator.dispose()
    prefix = f"test:{schema}:"
    env = {
        "OFFER_ENGINE_ENVIRONMENT": "test",
        "OFFER_ENGINE_DATABASE_URL": database_url,
        "OFFER_ENGINE_REDIS_URL": redis_available,
        "OFFER_ENGINE_REDIS_KEY_PREFIX": prefix,
        "OFFER_ENGINE_SMTP_PORT": str(mail.port),  # type: ignore[attr-defined]
        "OFFER_ENGINE_FENCE_INDEX_CHECK_S": "0.2",
        # every shopper is treated: the holdout would keep a deterministic few from an offer
        "OFFER_ENGINE_DEFAULT_HOLDOUT_SHARE": "0",
    }
    # one active scheduler, in the first process
    envs = [{**env, "OFFER_ENGINE_RUN_SCHEDULER": str(i == 0).lower()} for i in range(PROCESSES)]
    try:
        with served_many("api.app:app_from_environment", envs) as urls:
            engines = Cluster(urls, database_url, mail)
            try:
                for purpose in ("location_tracking", "marketing_offers"):
                    response = engines.clients[0].post(
                        "/v1/manager/notices",
                        headers=MANAGER,
                        json={"purpose": purpose, "version": "n-1", "text": f"{purpose}."},
                    )
                    assert response.status_code == 201, response.text
                yield engines
            finally:
                engines.close()
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        client = redis.Redis.from_url(redis_available)
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _create_store(client: httpx.Client, lon: float, lat: float) -> dict[str, Any]:
    response = client.post(
        "/v1/manager/stores",
        headers=MANAGER,
        json={"name": "Corner", "fence": {"lon": lon, "lat": lat, "radius_m": 50}},
    )
    assert response.status_code == 201, response.text
    store: dict[str, Any] = response.json()
    return store


def test_concurrent_pings_through_every_process_issue_and_send_one_coupon_each(
    cluster: Cluster,
) -> None:
    store = _create_store(cluster.clients[0], *STORE)
    campaign = cluster.clients[1].post(
        "/v1/manager/campaigns",
        headers=MANAGER,
        json={
            "name": "Coffee",
            "store_ids": [store["id"]],
            "daily_cap_per_shopper": 1,
            "offer": {
                "title": "Coffee",
                "body": "Now.",
                "discount_text": "30% off",
                "valid_minutes": 15,
            },
        },
    )
    assert campaign.status_code == 201, campaign.text
    time.sleep(1.0)  # every process has the new fence (the next test shows the bound)
    shoppers = [cluster.shopper(n) for n in range(SHOPPERS)]
    at = datetime.now(UTC) - timedelta(seconds=5)

    def burst(shopper: dict[str, Any]) -> list[int]:
        with ThreadPoolExecutor(len(cluster.clients)) as pool:
            answers = list(
                pool.map(
                    lambda c: c.post(
                        "/v1/sdk/pings", headers=shopper["auth"], json=_ping(*STORE, at)
                    ),
                    cluster.clients,
                )
            )
        for answer in answers:
            assert answer.status_code == 200, answer.text
        return [len(a.json()["coupons"]) for a in answers]

    with ThreadPoolExecutor(SHOPPERS) as pool:
        issued = list(pool.map(burst, shoppers))
    assert [sum(per_process) for per_process in issued] == [1] * SHOPPERS
    # One device's requests run one at a time across processes: the first enters the fence,
    # the copies that follow find the fix already used (stale) and change nothing.
    assert cluster.count(FenceEvent, FenceEvent.kind == "enter") == SHOPPERS
    assert cluster.count(Ping, Ping.status == "used") == SHOPPERS
    assert cluster.count(Ping, Ping.status == "stale") == SHOPPERS * (PROCESSES - 1)
    assert cluster.count(Coupon) == SHOPPERS
    assert cluster.count(Delivery) == SHOPPERS

    deadline = time.monotonic() + 60
    while cluster.count(Delivery, Delivery.status == "sent") < SHOPPERS:
        assert time.monotonic() < deadline, "the scheduler did not send every delivery in 60 s"
        time.sleep(0.2)
    time.sleep(1.0)  # room for a duplicate send to show up, if there were one
    offers = [
        m for m in cluster.inbox.messages if m["X-Offer-Engine-Kind"] != "consent-confirmation"
    ]
    assert sorted(m["To"] for m in offers) == sorted(s["email"] for s in shoppers)


def test_a_fence_created_through_one_process_is_matched_by_all_within_two_seconds(
    cluster: Cluster,
) -> None:
    lon, lat = STORE[0] + 0.02, STORE[1]
    shoppers = {i: cluster.shopper(100 + i) for i in range(1, PROCESSES)}
    store = _create_store(cluster.clients[0], lon, lat)
    created = time.monotonic()
    waiting = set(shoppers)
    while waiting:
        elapsed = time.monotonic() - created
        assert elapsed < 2.0, f"processes {sorted(waiting)} did not match the fence in 2 s"
        for i in sorted(waiting):
            at = datetime.now(UTC)
            answer = cluster.clients[i].post(
                "/v1/sdk/pings", headers=shoppers[i]["auth"], json=_ping(lon, lat, at)
            )
            assert answer.status_code == 200, answer.text
            if any(e["store_id"] == store["id"] for e in answer.json()["events"]):
                waiting.discard(i)
        time.sleep(0.05)
