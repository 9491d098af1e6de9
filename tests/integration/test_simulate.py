"""``offer-engine simulate`` replays the Liverpool route 14 bus track (trip 1105) through the SDK
API with the typed client, embedded, with stores imported from a file this test writes: two
80 m fences on the route and one 1.5 km off it. Every on-route store is entered and left once and
gives one coupon; the off-route store is never entered."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app
from api.simulate import embedded_client, replay
from api.tracks import read_track
from core.settings import INSECURE_KEYS
from geo.domain import haversine_m
from geo.geometry import METRES_PER_DEGREE
from tests.conftest import free_port
from tests.integration.test_cli import CLI, _env


def _data_dir() -> Path:
    """``$OFFER_ENGINE_DATA_DIR``, else the first ``shared/data`` next to a folder above."""
    if os.environ.get("OFFER_ENGINE_DATA_DIR"):
        return Path(os.environ["OFFER_ENGINE_DATA_DIR"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return Path(__file__).resolve().parents[3] / "shared" / "data"


DATA = _data_dir()
TRACK_CSV = DATA / "liverpool_bus_route14.csv"
needs_data = pytest.mark.skipif(
    not TRACK_CSV.is_file(), reason=f"the Liverpool track is not at {TRACK_CSV}"
)


def _stores_file(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    track = read_track(TRACK_CSV, "1105")
    fixes = track.fixes
    on = {"bus-a": fixes[40], "bus-b": fixes[110]}
    mid = fixes[75]
    off_lat = mid.lat + 1_500 / METRES_PER_DEGREE
    assert min(float(haversine_m(f.lon, f.lat, mid.lon, off_lat)) for f in fixes) > 450
    points = {**{k: (f.lon, f.lat) for k, f in on.items()}, "off-route": (mid.lon, off_lat)}
    features = [
        {
            "type": "Feature",
            "properties": {"external_id": key, "name": f"Store {key}", "radius_m": 80},
            "geometry": {"type": "Point", "coordinates": list(point)},
        }
        for key, point in points.items()
    ]
    path = tmp_path / "stores.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path, {key: f"Store {key}" for key in points}


@needs_data
def test_replays_the_liverpool_track_with_imported_stores(tmp_path: Path) -> None:
    stores, names = _stores_file(tmp_path)
    track = read_track(TRACK_CSV, "1105")
    sleeps: list[float] = []
    with embedded_client(track.fixes[0].at) as (client, set_clock):
        summary = replay(
            client,
            track,
            stores_file=stores,
            speedup=1_000_000,
            batch_size=3,
            shift=timedelta(0),
            set_clock=set_clock,
            sleep=sleeps.append,
        )
    assert summary.pings == 154 and summary.accepted == 154 and summary.stores == 3
    by_store = Counter((e.kind, e.store) for e in summary.events)
    for key in ("bus-a", "bus-b"):
        assert by_store[("enter", names[key])] == 1, summary.events
        assert by_store[("exit", names[key])] == 1, summary.events
    # never reached (a pass-by prediction towards it may come; it brings no offer)
    off = {e.kind for e in summary.events if e.store == names["off-route"]}
    assert off <= {"approaching"}, summary.events
    assert sorted(store for _, store, _ in summary.coupons) == [names["bus-a"], names["bus-b"]]
    enter_a = next(e.at for e in summary.events if e.kind == "enter" and e.store == names["bus-a"])
    exit_a = next(e.at for e in summary.events if e.kind == "exit" and e.store == names["bus-a"])
    assert enter_a < exit_a
    assert len(sleeps) == summary.batches - 1 and max(sleeps) < 0.01


@needs_data
def test_the_simulate_command_replays_the_track_with_stores_from_a_file(tmp_path: Path) -> None:
    """``offer-engine simulate --track … --stores FILE``, embedded, as a person types it."""
    stores, _ = _stores_file(tmp_path)
    # the two stores on the route: entered, left and a coupon each; the off-route one never
    _simulate_and_count(["--stores", str(stores)], stores_entered=2)


def _simulate_and_count(extra: list[str], stores_entered: int) -> None:
    """Run ``offer-engine simulate`` on trip 1105 at full speed; its summary counts one enter,
    one exit and one coupon per store entered, and every fix accepted."""
    result = CliRunner().invoke(
        app,
        ["simulate", "--track", str(TRACK_CSV), "--trip", "1105", "--speedup", "0", *extra],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    counts = dict(re.findall(r"(\w+ events|coupons)\s+│\s+(\d+)", result.output))
    entered = str(stores_entered)
    assert counts["enter events"] == counts["exit events"] == entered, result.output
    assert counts["coupons"] == entered, result.output
    assert "154 / 154" in result.output


def test_simulate_refuses_a_missing_track(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--track", str(tmp_path / "none.csv")])
    assert result.exit_code == 2 and "no track file" in result.output


def test_simulate_refuses_a_csv_without_positions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,speed\n2026-01-01T00:00:00Z,3\n")
    result = CliRunner().invoke(app, ["simulate", "--track", str(bad)])
    assert result.exit_code == 2 and "no latitude column" in result.output


@needs_data
def test_a_gpx_track_reads_the_same_as_its_csv(tmp_path: Path) -> None:
    track = read_track(TRACK_CSV, "1105")
    points = "\n".join(
        f'<trkpt lat="{f.lat}" lon="{f.lon}"><time>{f.at:%Y-%m-%dT%H:%M:%SZ}</time></trkpt>'
        for f in track.fixes
    )
    gpx = tmp_path / "trip.gpx"
    gpx.write_text(
        '<?xml version="1.0"?><gpx version="1.1" creator="test" '
        'xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
        f"{points}</trkseg></trk></gpx>"
    )
    again = read_track(gpx)
    assert [(f.at, round(f.lon, 6), round(f.lat, 6)) for f in again.fixes] == [
        (f.at, round(f.lon, 6), round(f.lat, 6)) for f in track.fixes
    ]


@needs_data
def test_simulate_against_a_running_server(tmp_path: Path) -> None:
    """``--server``: the same replay over the network against ``offer-engine serve``; without
    ``--stores`` the simulator places three stores on the track."""
    port = free_port()
    process = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--port",
            str(port),
            "--no-scheduler",
            "--database-url",
            f"sqlite:///{tmp_path / 's.db'}",
        ],
        # the replay stamps the track in the past, ending now: its visits are hours old
        env=_env(OFFER_ENGINE_ENVIRONMENT="test", OFFER_ENGINE_OFFER_TRIGGER_MAX_AGE_S="86400"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, up = time.monotonic() + 120, False
        while not up and time.monotonic() < deadline and process.poll() is None:
            try:
                up = httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                time.sleep(0.2)
        assert up, "the server did not come up"
        extra = ["--server", url, "--batch", "10", "--sdk-key", INSECURE_KEYS["sdk"]]
        _simulate_and_count([*extra, "--manager-key", INSECURE_KEYS["manager"]], 3)
    finally:
        process.terminate()
        process.wait(timeout=20)
