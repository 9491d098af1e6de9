"""``offer-engine bench api``: the HTTP API under load, end to end, against real services.

The engine is served by uvicorn (uvloop, httptools, ``workers`` processes, no scheduler) on a
fresh PostgreSQL schema and Redis key prefix, seeded over its own API: a grid of store fences, a
campaign on every store, devices with ``location_tracking`` consent. A separate process
(``api/bench/load.py``) then drives it, and in the same run drives a bare FastAPI endpoint of the
same shape (``api/bench/bare.py``: the same request model validated, then 204) on the same
server settings:

- batch: each device sends ``batches_per_device`` batches of ``batch_size`` fixes, walking across
  the fences (consent gate, fix storage, matching, presence, events and offer decisions);
- single: one fix per request, open loop at ``single_rate`` requests/s; then the same requests
  against the bare endpoint (``bare_single``: the floor that the HTTP stack and the load
  generator leave on this machine, printed but not in the ``RESULT`` line).

Everything listens on 127.0.0.1 and is torn down at the end (schema dropped, keys deleted). The
last line is ``RESULT batch_pings_per_s=.. bare_batch_pings_per_s=.. single_p99_ms=..
single_rps=..``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core.db import make_engine, upgrade_database

CENTRE = (24.9414, 60.1699)  # central Helsinki
FENCE_SPACING_M = 150.0
FENCE_RADIUS_M = 40.0
METRES_PER_DEG_LAT = 111_320.0
BENCH_PING_LIMIT = 10_000_000  # per window: never reached by the bench


@dataclass(frozen=True, slots=True)
class ApiBenchOptions:
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    redis_url: str = "redis://127.0.0.1:6379/0"
    workers: int = 2
    devices: int = 32
    batch_size: int = 500
    batches_per_device: int = 8
    concurrency: int = 8
    fences: int = 400
    single_rate: float = 1000.0
    single_seconds: float = 10.0
    max_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class ApiBenchResult:
    batch_pings_per_s: float
    bare_batch_pings_per_s: float
    single_p99_ms: float
    single_rps: float
    raw: dict[str, Any]

    def line(self) -> str:
        return (
            f"RESULT batch_pings_per_s={self.batch_pings_per_s:.0f} "
            f"bare_batch_pings_per_s={self.bare_batch_pings_per_s:.0f} "
            f"single_p99_ms={self.single_p99_ms:.2f} single_rps={self.single_rps:.0f}"
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _with_schema(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A PostgreSQL schema of its own (dropped afterwards), migrated to head."""
    if make_url(url).get_backend_name() != "postgresql":
        raise ValueError("bench api measures the production stack: give a PostgreSQL URL")
    schema = f"bench_{secrets.token_hex(5)}"
    admin = make_engine(url, pool_size=1, max_overflow=0)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = _with_schema(url, schema)
    try:
        engine = make_engine(scoped, pool_size=1, max_overflow=0)
        upgrade_database(engine)
        engine.dispose()
        yield scoped
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _uvicorn(app: str, port: int, workers: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(command, env={**os.environ, **env})


def _wait_until_serving(process: subprocess.Popen[bytes], base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server for {base} exited with {process.returncode}")
        with suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health", timeout=1).status_code < 500:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base} did not answer within {timeout_s} s")
        time.sleep(0.2)


@contextmanager
def served_many(
    app: str, envs: list[dict[str, str]], workers: int = 1, timeout_s: float = 120
) -> Iterator[list[str]]:
    """One uvicorn server per environment, started together, until the block ends."""
    ports = [free_port() for _ in envs]
    processes = [_uvicorn(app, port, workers, env) for port, env in zip(ports, envs, strict=True)]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for process, base in zip(processes, bases, strict=True):
            _wait_until_serving(process, base, timeout_s)
        yield bases
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def served(app: str, port: int, workers: int, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """``app`` (a factory) under uvicorn in a child process until the block ends: its base
    URL and the process id of uvicorn's supervisor (whose children are the workers)."""
    process = _uvicorn(app, port, workers, env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(process, base, 120)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _grid(count: int) -> list[tuple[float, float]]:
    side = max(1, math.ceil(math.sqrt(count)))
    per_deg_lon = METRES_PER_DEG_LAT * math.cos(math.radians(CENTRE[1]))
    half = (side - 1) / 2
    return [
        (
            CENTRE[0] + (col - half) * FENCE_SPACING_M / per_deg_lon,
            CENTRE[1] + (row - half) * FENCE_SPACING_M / METRES_PER_DEG_LAT,
        )
        for row in range(side)
        for col in range(side)
    ][:count]


def _seed(base: str, keys: dict[str, str], options: ApiBenchOptions) -> dict[str, Any]:
    """Stores, one campaign, notices and consenting devices, through the public API."""
    manager = {"X-API-Key": keys["manager"]}
    points = _grid(options.fences)
    with httpx.Client(base_url=base, timeout=30) as client:

        def ok(response: httpx.Response) -> dict[str, Any]:
            if response.status_code >= 300:
                raise RuntimeError(f"seeding failed: {response.status_code} {response.text}")
            body: dict[str, Any] = response.json()
            return body

        ok(
            client.post(
                "/v1/manager/notices",
                headers=manager,
                json={"purpose": "location_tracking", "version": "bench", "text": "Location."},
            )
        )
        store_ids = [
            ok(
                client.post(
                    "/v1/manager/stores",
                    headers=manager,
                    json={
                        "name": f"Store {i}",
                        "fence": {"lon": lon, "lat": lat, "radius_m": FENCE_RADIUS_M},
                    },
                )
            )["id"]
            for i, (lon, lat) in enumerate(points)
        ]
        ok(
            client.post(
                "/v1/manager/campaigns",
                headers=manager,
                json={
                    "name": "Bench",
                    "store_ids": store_ids,
                    "daily_cap_per_shopper": 3,
                    "offer": {
                        "title": "Coffee",
                        "body": "Coffee now.",
                        "discount_text": "10% off",
                        "valid_minutes": 10,
                    },
                },
            )
        )
        tokens = []
        for n in range(options.devices):
            device = ok(
                client.post(
                    "/v1/sdk/devices",
                    headers={"X-API-Key": keys["sdk"]},
                    json={"customer_ref": f"bench-{n}", "platform": "android"},
                )
            )
            ok(
                client.post(
                    "/v1/sdk/consents",
                    headers={"Authorization": f"Bearer {device['token']}"},
                    json={
                        "purpose": "location_tracking",
                        "granted": True,
                        "notice_version": "bench",
                    },
                )
            )
            tokens.append(device["token"])
    lons = [p[0] for p in points]
    lats = [p[1] for p in points]
    return {"tokens": tokens, "box": [min(lons), min(lats), max(lons), max(lats)]}


def _forget_keys(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


def run_api_bench(options: ApiBenchOptions, say: Callable[[str], None] = print) -> ApiBenchResult:
    keys = {role: secrets.token_urlsafe(24) for role in ("sdk", "manager", "pos", "compliance")}
    prefix = f"bench:{secrets.token_hex(4)}:"
    with fresh_database(options.database_url) as database_url:
        env = {
            "OFFER_ENGINE_ENVIRONMENT": "development",
            "OFFER_ENGINE_DATABASE_URL": database_url,
            "OFFER_ENGINE_REDIS_URL": options.redis_url,
            "OFFER_ENGINE_REDIS_KEY_PREFIX": prefix,
            "OFFER_ENGINE_SECRET_KEY": secrets.token_urlsafe(40),
            "OFFER_ENGINE_RUN_SCHEDULER": "false",
            # The load comes from one address standing in for many phones: ping limits far
            # above it, still counted on every request as in service. The seeding registers
            # every device from that address too (two requests each): no address limit on it.
            "OFFER_ENGINE_RATE_LIMITS": json.dumps(
                {
                    "pings": {"per_device": BENCH_PING_LIMIT, "per_ip": BENCH_PING_LIMIT},
                    "default": {"per_device": 120, "per_ip": BENCH_PING_LIMIT},
                }
            ),
            **{f"OFFER_ENGINE_{role.upper()}_API_KEY": key for role, key in keys.items()},
        }
        try:
            with (
                served("api.app:app_from_environment", free_port(), options.workers, env) as (
                    base,
                    engine_pid,
                ),
                served("api.bench.bare:create_bare_app", free_port(), options.workers, env) as (
                    bare,
                    bare_pid,
                ),
            ):
                say(f"engine at {base} ({options.workers} worker(s)), bare endpoint at {bare}")
                seeded = _seed(base, keys, options)
                say(f"seeded {options.fences} fences, {options.devices} consenting devices")
                time.sleep(1.5)  # every worker's fence index picks up the new stores
                figures = _drive((base, engine_pid), (bare, bare_pid), seeded, options)
        finally:
            _forget_keys(options.redis_url, prefix)
    batch, bare_batch, single = figures["batch"], figures["bare_batch"], figures["single"]
    for name, phase in figures.items():
        say(f"{name}: {json.dumps(phase)}")
    return ApiBenchResult(
        batch["pings_per_s"], bare_batch["pings_per_s"], single["p99_ms"], single["rps"], figures
    )


def _drive(
    engine: tuple[str, int],
    bare_server: tuple[str, int],
    seeded: dict[str, Any],
    options: ApiBenchOptions,
) -> dict[str, Any]:
    (base, engine_pid), (bare, bare_pid) = engine, bare_server
    batch = {
        "kind": "batch",
        "batch_size": options.batch_size,
        "batches_per_device": options.batches_per_device,
        "concurrency": options.concurrency,
        "max_seconds": options.max_seconds,
    }
    t0 = datetime.now(UTC) - timedelta(hours=3)
    plan = {
        **seeded,
        "t0": t0.isoformat(),
        "phases": [
            {**batch, "name": "batch", "url": f"{base}/v1/sdk/pings", "server_pid": engine_pid},
            {**batch, "name": "bare_batch", "url": f"{bare}/v1/sdk/pings", "server_pid": bare_pid},
            {
                "kind": "single",
                "name": "single",
                "url": f"{base}/v1/sdk/pings",
                "server_pid": engine_pid,
                "rate": options.single_rate,
                "duration_s": options.single_seconds,
                "first_fix": options.batch_size * options.batches_per_device,
            },
            {  # the floor: the same requests, HTTP stack and generator, no engine behind them
                "kind": "single",
                "name": "bare_single",
                "url": f"{bare}/v1/sdk/pings",
                "server_pid": bare_pid,
                "rate": options.single_rate,
                "duration_s": options.single_seconds,
                "first_fix": options.batch_size * options.batches_per_device,
            },
        ],
    }
    with tempfile.TemporaryDirectory() as scratch:
        plan_file = Path(scratch) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        done = subprocess.run(
            [sys.executable, "-m", "api.bench.load", str(plan_file)],
            capture_output=True,
            text=True,
            timeout=options.max_seconds * 2 + options.single_seconds * 2 + 600,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures
