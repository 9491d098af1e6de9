"""The load generator of ``offer-engine bench api``, run in its own process so the engine's
figures include HTTP parsing on both sides and none of the generator's work runs in the server.

``python -m api.bench.load PLAN.json`` reads a plan written by ``api/bench/api.py``, prints one
JSON object with the figures. Every request body is built before its phase starts.

- ``batch``: closed loop, ``concurrency`` connections; each connection owns some devices and sends
  their batches in order (a device's fixes arrive in time order, as from a phone). Throughput is
  fixes in successful answers per second of the phase.
- ``single``: open loop at ``rate`` requests/s for ``duration_s``: request *i* is due at
  ``start + i / rate`` whatever happened to the others, and its latency is counted from that due
  time (so a stalled server cannot hide its queue: no coordinated omission). Requests still
  unanswered ``GRACE_S`` after the last one was due are cancelled and counted as ``late``.

When the phase names its server's process (``server_pid``: uvicorn's supervisor), the CPU time
that server spent during the phase (supervisor and workers, user and system; not the database's
nor Redis's) is reported too: per request for ``single``, per fix for ``batch``. Unlike
latency it hardly depends on the rest of the machine, so it compares runs on machines of
different speed or load.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil

WALK_MPS = 1.4
GRACE_S = 10.0
METRES_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True, slots=True)
class Walker:
    """A device's walk: straight lines at walking pace, bouncing inside the fences' box."""

    token: str
    lon: float
    lat: float
    heading: float
    box: tuple[float, float, float, float]

    def fixes(self, first: int, count: int, t0: datetime) -> list[dict[str, Any]]:
        min_lon, min_lat, max_lon, max_lat = self.box
        per_deg_lon = METRES_PER_DEG_LAT * math.cos(math.radians(self.lat))
        out = []
        for i in range(first, first + count):
            distance = WALK_MPS * i
            lon = self.lon + distance * math.sin(self.heading) / per_deg_lon
            lat = self.lat + distance * math.cos(self.heading) / METRES_PER_DEG_LAT
            out.append(
                {
                    "lon": round(_bounce(lon, min_lon, max_lon), 7),
                    "lat": round(_bounce(lat, min_lat, max_lat), 7),
                    "accuracy_m": 8.0,
                    "recorded_at": (t0 + timedelta(seconds=i)).isoformat(),
                }
            )
        return out


def _bounce(value: float, low: float, high: float) -> float:
    span = high - low
    offset = (value - low) % (2 * span)
    return low + (offset if offset <= span else 2 * span - offset)


def _walkers(plan: dict[str, Any]) -> list[Walker]:
    rng = random.Random(plan.get("seed", 7))
    box = tuple(plan["box"])
    return [
        Walker(
            token,
            rng.uniform(box[0], box[2]),
            rng.uniform(box[1], box[3]),
            rng.uniform(0, 2 * math.pi),
            box,
        )
        for token in plan["tokens"]
    ]


class ServerClock:
    """CPU seconds used so far by a server process and its children (its workers)."""

    def __init__(self, pid: int | None) -> None:
        self.process = psutil.Process(pid) if pid else None

    def seconds(self) -> float | None:
        if self.process is None:
            return None
        total = 0.0
        for process in [self.process, *self.process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total


def _spent(clock: ServerClock, before: float | None, per: int, scale: float) -> float | None:
    after = clock.seconds()
    if before is None or after is None or per == 0:
        return None
    return (after - before) * scale / per


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


Lanes = list[list[tuple[dict[str, str], bytes]]]
_built: dict[tuple[int, int, int], Lanes] = {}


def _lanes(walkers: list[Walker], plan: dict[str, Any], t0: datetime) -> Lanes:
    """Every batch body, per connection; built once and reused by the bare phase."""
    size, per_device = int(plan["batch_size"]), int(plan["batches_per_device"])
    concurrency = int(plan["concurrency"])
    key = (size, per_device, concurrency)
    if key in _built:
        return _built[key]
    lanes: Lanes = [[] for _ in range(concurrency)]
    for n, walker in enumerate(walkers):
        lane = lanes[n % concurrency]
        for j in range(per_device):
            body = json.dumps({"pings": walker.fixes(j * size, size, t0)}).encode()
            lane.append((_headers(walker.token), body))
    # interleave: each lane sends device A batch 0, device B batch 0, ..., then batch 1, ...
    for i, lane in enumerate(lanes):
        devices = len(lane) // per_device if per_device else 0
        lanes[i] = [lane[d * per_device + j] for j in range(per_device) for d in range(devices)]
    _built[key] = lanes
    return lanes


async def run_batch(
    url: str, walkers: list[Walker], plan: dict[str, Any], t0: datetime
) -> dict[str, Any]:
    size = int(plan["batch_size"])
    concurrency = int(plan["concurrency"])
    deadline_s = float(plan["max_seconds"])
    lanes = _lanes(walkers, plan, t0)
    statuses: Counter[str] = Counter()
    pings = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clock = ServerClock(plan.get("server_pid"))
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        await client.post(url, headers=lanes[0][0][0], content=lanes[0][0][1])  # warm up
        cpu = clock.seconds()
        start = time.perf_counter()

        async def drive(lane: list[tuple[dict[str, str], bytes]]) -> None:
            nonlocal pings
            for headers, body in lane[1:] if lane is lanes[0] else lane:
                if time.perf_counter() - start > deadline_s:
                    return
                response = await client.post(url, headers=headers, content=body)
                statuses[str(response.status_code)] += 1
                if response.status_code < 300:
                    pings += size

        await asyncio.gather(*(drive(lane) for lane in lanes))
        elapsed = time.perf_counter() - start
        cpu_us_per_ping = _spent(clock, cpu, pings, 1e6)
    return {
        "pings": pings,
        "seconds": elapsed,
        "pings_per_s": pings / elapsed if elapsed else 0.0,
        "server_cpu_us_per_ping": cpu_us_per_ping,
        "statuses": dict(statuses),
    }


async def run_single(
    url: str, walkers: list[Walker], plan: dict[str, Any], t0: datetime
) -> dict[str, Any]:
    rate, duration = float(plan["rate"]), float(plan["duration_s"])
    first = int(plan["first_fix"])
    total = int(rate * duration)
    requests: list[tuple[dict[str, str], bytes]] = []
    per_walker: Counter[int] = Counter()
    for i in range(total):
        w = i % len(walkers)
        fix = walkers[w].fixes(first + per_walker[w], 1, t0)
        per_walker[w] += 1
        requests.append((_headers(walkers[w].token), json.dumps({"pings": fix}).encode()))
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    connections = int(plan.get("connections", 64))
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30.0)
    ) as client:

        async def post(headers: dict[str, str], body: bytes) -> int:
            async with client.post(url, headers=headers, data=body) as response:
                await response.read()
                return response.status

        # warm up: open every connection before the clock starts
        warm = requests[:connections]
        await asyncio.gather(*(post(headers, body) for headers, body in warm))
        requests = requests[connections:]
        gc.collect()
        gc.freeze()  # the request bodies and tasks live to the end: no collector pauses on them
        clock = ServerClock(plan.get("server_pid"))
        cpu = clock.seconds()
        start = time.perf_counter()
        in_flight = asyncio.Semaphore(connections)

        async def one(due: float, headers: dict[str, str], body: bytes) -> None:
            async with in_flight:
                status = await post(headers, body)
            latencies.append(time.perf_counter() - due)
            statuses[str(status)] += 1

        # Each request's task is made when it falls due, by one pacing loop: making them all
        # up front stalled this loop for tens of milliseconds at the start, which the first
        # requests' latencies then counted against the server.
        tasks: list[asyncio.Task[None]] = []
        for i, (h, b) in enumerate(requests):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, h, b)))
        _, late = await asyncio.wait(tasks, timeout=GRACE_S) if tasks else (set(), set())
        cpu_ms_per_request = _spent(clock, cpu, len(tasks) - len(late), 1e3)
        for task in late:
            task.cancel()
        elapsed = time.perf_counter() - start
        for i, task in enumerate(tasks):
            if task in late:
                latencies.append(elapsed - i / rate)
                statuses["late"] += 1
    latencies.sort()
    ok = sum(n for s, n in statuses.items() if s.isdigit() and int(s) < 300)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": ok / elapsed if elapsed else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
        "server_cpu_ms_per_request": cpu_ms_per_request,
        "statuses": dict(statuses),
    }


async def main(plan: dict[str, Any]) -> dict[str, Any]:
    walkers = _walkers(plan)
    t0 = datetime.fromisoformat(plan["t0"]).astimezone(UTC)
    out: dict[str, Any] = {}
    for phase in plan["phases"]:
        if phase["kind"] == "batch":
            out[phase["name"]] = await run_batch(phase["url"], walkers, phase, t0)
        else:
            out[phase["name"]] = await run_single(phase["url"], walkers, phase, t0)
    return out


if __name__ == "__main__":
    plan = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        result = asyncio.run(main(plan))
    else:
        result = uvloop.run(main(plan))
    print(json.dumps(result))
