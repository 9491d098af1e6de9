"""Replay of a real bus track through the geofence engine (BatchMatcher, prediction on).

Data: ``../shared/data/liverpool_bus_route14.csv`` (UK Bus Open Data Service, Open Government
Licence v3.0): GPS fixes of Liverpool route 14 buses, one every ~24 s, grouped by trip. Trip 1105
(154 fixes, 9.8 km, 58 min, with long stops) is replayed in time order, three fixes per batch (about
one SDK upload a minute), records carried over, as a phone on the bus would send them.

Choices:
- The feed has no accuracy; every fix gets 10 m (a good phone GPS fix in a street).
- The reported ``bearing`` is not used as heading. Judged against the track it is unsound: a
  quarter of the fixes have none, one in ten is more than 20 degrees off the direction actually
  travelled, and it is reported while the bus stands still. The engine derives speed and heading
  from the last two fixes instead, as it does for an SDK that sends neither
  (``test_the_reported_bearing_is_too_unreliable_to_use`` keeps that judgement honest).
- Fences ON the route: circles of 80 m centred on fixes of the trip, 2 km apart along it. Fences
  OFF the route: 80 m circles 700 m to the side of each, kept only if no fix of the trip comes
  within 450 m.

The ETA figures (median, p90 of |eta - actual| / actual, where actual is the time to the enter
that followed) are computed in ``eta_errors`` and are in the assertion messages. The 25% target is
judged over every trip of the file, every approaching event emitted for an on-route fence.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest

from geo.domain import CircleFence, FenceIndex, Fix, FixBatch, haversine_m
from geo.geometry import METRES_PER_DEGREE, to_local
from geo.matcher import BatchMatcher
from geo.prediction import PredictionRules
from geo.tracking import FixStatus, Record, TrackingRules, Transition
from tests.shared_data import shared_data_dir

DATA = shared_data_dir()
TRACK_CSV = DATA / "liverpool_bus_route14.csv"
TRIP = "1105"
ACCURACY_M = 10.0
BATCH_SIZE = 3
RADIUS_M = 80.0
SPACING_M = 2_000.0
OFF_ROUTE_M = 700.0
PREDICTION = PredictionRules()


@dataclass(frozen=True)
class Row:
    ping_id: str
    at: datetime
    lon: float
    lat: float
    bearing: float | None


@dataclass(frozen=True)
class Replay:
    rows: list[Row]
    on_route: list[CircleFence]
    off_route: list[CircleFence]
    transitions: list[Transition]
    records: dict[str, Record]


def read_trip(trip_id: str) -> list[Row]:
    with TRACK_CSV.open(newline="") as handle:
        rows = [
            Row(
                r["id"],
                datetime.strptime(r["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC),
                float(r["longitude"]),
                float(r["latitude"]),
                float(r["bearing"]) if r["bearing"] else None,
            )
            for r in csv.DictReader(handle)
            if r["trip_id"] == trip_id
        ]
    return sorted(rows, key=lambda r: r.at)


def lons_lats(rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r.lon for r in rows]), np.array([r.lat for r in rows])


def place_fences(rows: list[Row]) -> tuple[list[CircleFence], list[CircleFence]]:
    lons, lats = lons_lats(rows)
    along = np.concatenate(
        ([0.0], np.cumsum(haversine_m(lons[:-1], lats[:-1], lons[1:], lats[1:])))
    )
    on_route: list[CircleFence] = []
    off_route: list[CircleFence] = []
    for target in np.arange(1_500.0, along[-1] - 800.0, SPACING_M):
        i = int(np.argmin(np.abs(along - target)))
        on = CircleFence(f"on{len(on_route)}", "on", float(lons[i]), float(lats[i]), RADIUS_M)
        on_route.append(on)
        # the direction of travel around fix i, and the two perpendiculars to it
        before, after = max(i - 3, 0), min(i + 3, len(rows) - 1)
        x, y = to_local(
            lons[after : after + 1], lats[after : after + 1], lons[before], lats[before]
        )
        heading = math.atan2(float(x[0]), float(y[0]))
        for side in (1.0, -1.0):
            east = OFF_ROUTE_M * math.cos(heading) * side
            north = -OFF_ROUTE_M * math.sin(heading) * side
            lon = on.lon + east / (METRES_PER_DEGREE * math.cos(math.radians(on.lat)))
            lat = on.lat + north / METRES_PER_DEGREE
            if float(haversine_m(lons, lats, lon, lat).min()) > 450.0:
                off_route.append(CircleFence(f"off{len(off_route)}", "off", lon, lat, RADIUS_M))
                break
    return on_route, off_route


def fixes_of(rows: list[Row]) -> list[Fix]:
    return [Fix("bus", r.lon, r.lat, r.at, ACCURACY_M, ping_id=r.ping_id) for r in rows]


def replay(
    fixes: list[Fix], fences: list[CircleFence], batch_size: int
) -> tuple[list[Transition], dict[str, Record]]:
    matcher = BatchMatcher(TrackingRules(), PREDICTION)
    index = FenceIndex(fences)
    records: dict[str, Record] = {}
    transitions: list[Transition] = []
    for start in range(0, len(fixes), batch_size):
        outcome = matcher.process(index, FixBatch.of(fixes[start : start + batch_size]), records)
        assert all(s is FixStatus.USED for s in outcome.statuses), outcome.statuses
        records = outcome.records
        transitions.extend(outcome.transitions)
    return transitions, records


@pytest.fixture(scope="module")
def trip() -> Replay:
    if not TRACK_CSV.is_file():
        pytest.skip(
            f"real bus track not found at {TRACK_CSV}: the shared data folder (../shared/data) "
            "is not part of a fresh clone"
        )
    rows = read_trip(TRIP)
    assert len(rows) > 100, f"trip {TRIP} should have about 150 fixes, found {len(rows)}"
    on_route, off_route = place_fences(rows)
    transitions, records = replay(fixes_of(rows), on_route + off_route, BATCH_SIZE)
    return Replay(rows, on_route, off_route, transitions, records)


def first_enter(transitions: list[Transition], fence_id: str) -> datetime:
    return next(
        t.occurred_at for t in transitions if t.kind == "enter" and t.fence.fence_id == fence_id
    )


def eta_errors(replay: Replay) -> list[tuple[str, float, float, float]]:
    """(fence, predicted eta s, actual s to the enter, |eta - actual| / actual) of every
    approaching event on an on-route fence that was entered afterwards."""
    on_ids = {f.fence_id for f in replay.on_route}
    found = []
    for t in replay.transitions:
        if t.kind != "approaching" or t.fence.fence_id not in on_ids:
            continue
        enters = [
            e.occurred_at
            for e in replay.transitions
            if e.kind == "enter"
            and e.fence.fence_id == t.fence.fence_id
            and e.occurred_at > t.occurred_at
        ]
        if enters:
            actual = (min(enters) - t.occurred_at).total_seconds()
            eta = t.details["eta_s"]
            found.append((t.fence.fence_id, eta, actual, abs(eta - actual) / actual))
    return found


def summary(errors: list[tuple[str, float, float, float]]) -> str:
    rel = np.array([e[3] for e in errors])
    cases = ", ".join(
        f"{f}: eta {eta:.0f} s vs {act:.0f} s ({err:.0%})" for f, eta, act, err in errors
    )
    return (
        f"{len(rel)} predictions, median error {np.median(rel):.0%}, "
        f"p90 {np.percentile(rel, 90):.0%}, within 25%: {np.mean(rel <= 0.25):.0%} [{cases}]"
    )


# --- the data and the choices made on it ----------------------------------------------------


def test_the_trip_is_a_real_journey_of_several_kilometres(trip: Replay) -> None:
    lons, lats = lons_lats(trip.rows)
    length = float(haversine_m(lons[:-1], lats[:-1], lons[1:], lats[1:]).sum())

    assert 8_000 < length < 12_000
    assert len(trip.on_route) >= 4
    assert len(trip.off_route) >= 3


def test_the_reported_bearing_is_too_unreliable_to_use(trip: Replay) -> None:
    rows = trip.rows
    off_by: list[float] = []
    for a, b in itertools.pairwise(rows):
        moved = float(haversine_m(a.lon, a.lat, b.lon, b.lat))
        if b.bearing is None or moved < 20.0:
            continue
        x, y = to_local(np.array([b.lon]), np.array([b.lat]), a.lon, a.lat)
        travelled = math.degrees(math.atan2(float(x[0]), float(y[0]))) % 360.0
        off_by.append(abs((b.bearing - travelled + 180.0) % 360.0 - 180.0))
    missing = sum(r.bearing is None for r in rows) / len(rows)

    assert missing > 0.2
    assert np.percentile(off_by, 90) > 20.0


# --- fences ---------------------------------------------------------------------------------


def test_every_on_route_fence_is_entered_then_exited_once_in_route_order(trip: Replay) -> None:
    for fence in trip.on_route:
        kinds = [
            t.kind
            for t in trip.transitions
            if t.fence.fence_id == fence.fence_id and t.kind in ("enter", "exit")
        ]
        assert kinds == ["enter", "exit"], (fence.fence_id, kinds)
    entered = [first_enter(trip.transitions, f.fence_id) for f in trip.on_route]
    assert entered == sorted(entered)
    exits = {t.fence.fence_id: t for t in trip.transitions if t.kind == "exit"}
    for fence, at in zip(trip.on_route, entered, strict=True):
        exit_ = exits[fence.fence_id]
        assert exit_.occurred_at > at
        assert 0 < exit_.details["duration_s"] <= (exit_.occurred_at - at).total_seconds()
    assert trip.records["bus"]["in"] == {}


def test_no_off_route_fence_is_entered(trip: Replay) -> None:
    off_ids = {f.fence_id for f in trip.off_route}

    entered = [
        t for t in trip.transitions if t.fence.fence_id in off_ids and t.kind != "approaching"
    ]

    assert entered == []


def test_small_batches_and_one_batch_give_the_same_enters_exits_and_dwells(trip: Replay) -> None:
    fences = trip.on_route + trip.off_route
    whole, _ = replay(fixes_of(trip.rows), fences, len(trip.rows))

    def visits(transitions: list[Transition]) -> list[tuple[datetime, str, str]]:
        return [
            (t.occurred_at, t.kind, t.fence.fence_id)
            for t in transitions
            if t.kind != "approaching"
        ]

    assert visits(whole) == visits(trip.transitions)


# --- prediction -----------------------------------------------------------------------------


def test_every_on_route_fence_is_announced_before_the_bus_arrives(trip: Replay) -> None:
    for fence in trip.on_route:
        arrival = first_enter(trip.transitions, fence.fence_id)
        announced = [
            t
            for t in trip.transitions
            if t.kind == "approaching" and t.fence.fence_id == fence.fence_id
        ]
        assert any(t.occurred_at < arrival for t in announced), fence.fence_id


def test_predicted_arrivals_are_roughly_right(trip: Replay) -> None:
    """On this one trip: ETAs use the average speed of the last 10 minutes with each stop
    counted up to 20 s; at least one ETA per on-route fence, median under 60%, some within 25%.
    """
    errors = eta_errors(trip)
    rel = np.array([e[3] for e in errors])

    assert len(errors) >= len(trip.on_route), summary(errors)
    assert np.median(rel) <= 0.6, summary(errors)
    assert np.any(rel <= 0.25), summary(errors)


def all_trips() -> list[Replay]:
    """Every trip of the file long enough to carry an on-route fence, replayed the same way."""
    with TRACK_CSV.open(newline="") as handle:
        trip_ids = sorted({r["trip_id"] for r in csv.DictReader(handle)})
    replays = []
    for trip_id in trip_ids:
        rows = read_trip(trip_id)
        on_route, off_route = place_fences(rows) if len(rows) >= 60 else ([], [])
        if on_route:
            transitions, records = replay(fixes_of(rows), on_route + off_route, BATCH_SIZE)
            replays.append(Replay(rows, on_route, off_route, transitions, records))
    return replays


def test_predicted_arrivals_are_within_25_percent_over_every_trip(trip: Replay) -> None:
    """Every approaching event the engine emits for an on-route fence, over every trip of the
    file, is scored against the enter that followed; coverage is the share of on-route fences
    announced at all. Measured: 37 ETAs, 84% within 25%, median 15%, p90 44%; 35 of 41 fences
    announced (the others only came into the path less than 90 s before arrival)."""
    replays = all_trips()
    errors = [e for r in replays for e in eta_errors(r)]
    rel = np.array([e[3] for e in errors])
    fences = sum(len(r.on_route) for r in replays)
    announced = sum(len({e[0] for e in eta_errors(r)}) for r in replays)
    figures = f"{summary(errors)}; {announced} of {fences} on-route fences announced"

    assert len(replays) >= 8, figures
    assert np.mean(rel <= 0.25) >= 0.8, figures
    assert np.median(rel) <= 0.2, figures
    assert np.percentile(rel, 90) <= 0.6, figures
    assert announced >= 0.8 * fences, figures
    for r in replays:  # an ETA band around each ETA
        for t in r.transitions:
            if t.kind == "approaching":
                d = t.details
                assert d["eta_earliest_s"] <= d["eta_s"] <= d["eta_latest_s"], d
