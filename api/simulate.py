"""``offer-engine simulate``: replay a recorded track through the SDK API with the typed client.

Embedded (default): a temporary SQLite runtime (demo environment, file email, in-process hot
state) behind FastAPI's TestClient; a manual clock follows the track's own times, so dwell and
expiry behave as on the day. Against ``--server URL``: the track is shifted in time so that it
ends when the replay starts (the server's clock decides coupon expiry).

Either way: notices are published (a 409 for an existing version is fine), a device registers
and grants location and offer consent (in-app channel), stores come from ``--stores`` through
the manager import endpoint or, without it, are placed along the track itself, one campaign
covers them, and the fixes go in batches, paced by ``--speedup``.
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from api.tracks import Track, TrackFix
from client import ApiError, DeviceSession, OfferEngineClient, Ping
from geo.domain import haversine_m
from geo.geometry import METRES_PER_DEGREE

NOTICE_VERSION = "simulate-1"
PLACED_RADIUS_M = 80.0


@dataclass
class SimEvent:
    kind: str
    store: str
    at: datetime


@dataclass
class Summary:
    track: str
    pings: int = 0
    batches: int = 0
    accepted: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    events: list[SimEvent] = field(default_factory=list)
    coupons: list[tuple[str, str, str]] = field(default_factory=list)  # code, store, discount
    stores: int = 0

    def counts(self) -> Counter[str]:
        return Counter(e.kind for e in self.events)


def placed_stores(track: Track) -> list[tuple[str, float, float]]:
    """Three stores on the track (a quarter, half and three quarters along) and one 1.5 km
    to the side of the middle, kept only where no fix comes within 1 km."""
    fixes = track.fixes
    picks = [fixes[len(fixes) * q // 4] for q in (1, 2, 3)]
    stores = [(f"On the way {i + 1}", f.lon, f.lat) for i, f in enumerate(picks)]
    mid = fixes[len(fixes) // 2]
    off_lat = mid.lat + 1_500.0 / METRES_PER_DEGREE
    nearest = min(float(haversine_m(f.lon, f.lat, mid.lon, off_lat)) for f in fixes)
    if nearest > 1_000.0:
        stores.append(("Off the way", mid.lon, off_lat))
    return stores


def _batches(fixes: list[TrackFix], size: int) -> Iterator[list[TrackFix]]:
    for start in range(0, len(fixes), size):
        yield fixes[start : start + size]


def _publish_notices(client: OfferEngineClient) -> None:
    for purpose in ("location_tracking", "marketing_offers"):
        try:
            client.manager.publish_notice(
                purpose, NOTICE_VERSION, f"The track simulator uses {purpose} to test offers."
            )
        except ApiError as exc:
            if exc.status != 409:
                raise


def _setup_stores(
    client: OfferEngineClient, track: Track, stores_file: Path | None
) -> dict[str, str]:
    """Create or import the stores; return id -> name of every store the campaign covers."""
    if stores_file is not None:
        client.manager.import_stores(stores_file)
    else:
        for name, lon, lat in placed_stores(track):
            client.manager.create_store(
                name,
                lon=lon,
                lat=lat,
                radius_m=PLACED_RADIUS_M,
                external_id=f"simulate-{uuid.uuid4().hex[:12]}",
            )
    names: dict[str, str] = {}
    offset = 0
    while len(names) < 1000:
        page = client.manager.stores(limit=500, offset=offset)
        names.update({s.id: s.name for s in page.items})
        offset += len(page.items)
        if not page.items or offset >= page.page.total:
            break
    return names


def replay(
    client: OfferEngineClient,
    track: Track,
    *,
    stores_file: Path | None,
    speedup: float,
    batch_size: int,
    shift: timedelta,
    set_clock: Callable[[datetime], None] | None,
    on_batch: Callable[[Summary, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Summary:
    summary = Summary(track.name)
    _publish_notices(client)
    names = _setup_stores(client, track, stores_file)
    summary.stores = len(names)
    if not names:
        raise ApiError(422, "no_stores", "no stores to run a campaign on")
    client.manager.create_campaign(
        "Track simulation",
        list(names)[:1000],
        title="Just around the corner",
        body="A short-lived offer from the simulator.",
        discount_text="20% off",
        valid_minutes=15,
        daily_cap_per_shopper=100,
        # One simulated shopper: a holdout draw would withhold every offer of a run.
        holdout_share=0,
    )
    first = track.fixes[0].at + shift
    if set_clock is not None:
        set_clock(first)
    device: DeviceSession = client.sdk.register_device(
        f"simulator-{uuid.uuid4().hex[:12]}", "android"
    )
    device.give_consent("location_tracking", NOTICE_VERSION)
    device.give_consent("marketing_offers", NOTICE_VERSION, channel="in_app")
    previous: datetime | None = None
    for batch in _batches(track.fixes, batch_size):
        last = batch[-1].at + shift
        if previous is not None and speedup > 0:
            sleep(max(0.0, (last - previous).total_seconds()) / speedup)
        if set_clock is not None:
            set_clock(last)
        previous = last
        result = device.send_pings(
            [Ping(lon=f.lon, lat=f.lat, recorded_at=f.at + shift, accuracy_m=10.0) for f in batch]
        )
        summary.batches += 1
        summary.pings += len(batch)
        summary.accepted += result.accepted
        summary.ignored.update(result.ignored)
        for event in result.events:
            store = names.get(event.store_id, event.store_id)
            summary.events.append(SimEvent(event.kind, store, event.occurred_at))
        for coupon in result.coupons:
            store = names.get(coupon.store_id, coupon.store_id)
            summary.coupons.append((coupon.code, store, coupon.discount_text))
        if on_batch is not None:
            on_batch(summary, len(track.fixes))
    return summary


@contextmanager
def embedded_client(
    start: datetime,
) -> Iterator[tuple[OfferEngineClient, Callable[[datetime], None]]]:
    """A throwaway engine in this process (SQLite in a temporary folder, file email) whose
    manual clock starts at ``start``; the second value moves it."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.runtime import Runtime
    from core.clock import ManualClock
    from core.settings import INSECURE_KEYS, EmailBackend, Environment, Settings

    with tempfile.TemporaryDirectory(prefix="offer-engine-sim-") as folder:
        settings = Settings(
            environment=Environment.DEMO,
            database_url=f"sqlite:///{Path(folder) / 'simulate.db'}",
            redis_url=None,
            email_backend=EmailBackend.FILE,
            email_file_dir=Path(folder) / "outbox",
            run_scheduler=False,
        )
        clock = ManualClock(start)
        runtime = Runtime.build(settings, clock=clock)
        runtime.start()
        try:
            with TestClient(create_app(runtime=runtime)) as http:
                yield (
                    OfferEngineClient(
                        http=http,
                        sdk_key=INSECURE_KEYS["sdk"],
                        manager_key=INSECURE_KEYS["manager"],
                    ),
                    clock.set,
                )
        finally:
            runtime.stop()


def server_shift(track: Track, now: datetime) -> timedelta:
    """Move the track so that it ends now: every fix is in the past for the server."""
    return timedelta(seconds=math.floor((now - track.fixes[-1].at).total_seconds()))
