"""Pass-by prediction (geo/prediction.py through BatchMatcher), opening hours in the store's zone
(geo/hours.py) and whether an event may trigger an offer (offers/flows.py eligibility)."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import shapely
import shapely.affinity
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.domain import CircleFence, Fence, FenceIndex, Fix, FixBatch, PolygonFence
from geo.geometry import EARTH_RADIUS_M, METRES_PER_DEGREE, PolygonShape
from geo.hours import InvalidOpeningHours, is_open, local_time, validate_hours
from geo.index import StoreInfo
from geo.matcher import BatchMatcher, BatchOutcome
from geo.prediction import (
    _FEW_MOTIONS,
    Motion,
    PredictionRules,
    _corridors,
    _polygon_along,
    motion_of,
    predict,
)
from geo.tracking import Record, TrackingRules, Transition
from offers.flows import eligibility, timeliness

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LON0, LAT0 = 24.94, 60.17
PREDICTION = PredictionRules()  # 600 s horizon, >= 1 m/s, 120 s before an approach repeats
HELSINKI = "Europe/Helsinki"


# --- builders -------------------------------------------------------------------------------


def destination(lon: float, lat: float, bearing_deg: float, distance: float) -> tuple[float, float]:
    phi1, lmb1 = math.radians(lat), math.radians(lon)
    theta, delta = math.radians(bearing_deg), distance / EARTH_RADIUS_M
    phi2 = math.asin(
        math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    )
    lmb2 = lmb1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * math.sin(phi2),
    )
    return (math.degrees(lmb2) + 180.0) % 360.0 - 180.0, math.degrees(phi2)


def ahead(metres: float, bearing: float = 90.0, start: tuple[float, float] = (LON0, LAT0)) -> Any:
    return destination(start[0], start[1], bearing, metres)


def fix(
    seconds: float, where: tuple[float, float], accuracy: float | None = 5.0, **extra: Any
) -> Fix:
    return Fix("d1", where[0], where[1], T0 + timedelta(seconds=seconds), accuracy, **extra)


def circle(fence_id: str, centre: tuple[float, float], radius: float = 50.0) -> CircleFence:
    return CircleFence(fence_id, "s1", centre[0], centre[1], radius)


def moving_east(speed: float, seconds: Sequence[float], accuracy: float = 5.0) -> list[Fix]:
    """Fixes of a device going east from (LON0, LAT0) at ``speed`` m/s."""
    return [fix(s, ahead(speed * s), accuracy) for s in seconds]


def process(
    fixes: Sequence[Fix],
    fences: Sequence[Fence],
    records: dict[str, Record] | None = None,
    prediction: PredictionRules = PREDICTION,
) -> BatchOutcome:
    matcher = BatchMatcher(TrackingRules(), prediction)
    return matcher.process(FenceIndex(list(fences)), FixBatch.of(list(fixes)), records or {})


def approaches(outcome: BatchOutcome) -> dict[str, dict[str, float]]:
    return {t.fence.fence_id: t.details for t in outcome.transitions if t.kind == "approaching"}


# --- prediction -----------------------------------------------------------------------------


def test_a_device_moving_straight_at_a_circle_is_approaching_with_eta_distance_over_speed() -> None:
    # 10 m/s east; the fence's near edge is 1400 m past the last fix
    fence = circle("A", ahead(100.0 + 1_400.0 + 50.0), 50.0)

    outcome = process(moving_east(10.0, [0, 10]), [fence])

    found = approaches(outcome)
    assert list(found) == ["A"]
    assert found["A"]["eta_s"] == pytest.approx(140.0, rel=0.05)
    assert found["A"]["distance_m"] == pytest.approx(1_400.0, rel=0.01)
    assert found["A"]["speed_mps"] == pytest.approx(10.0, rel=0.01)
    assert outcome.predicted == 1
    (event,) = [t for t in outcome.transitions if t.kind == "approaching"]
    assert event.occurred_at == T0 + timedelta(seconds=10)  # as of the last fix


@settings(deadline=None, max_examples=60)
@given(
    st.floats(0.0, 360.0),
    st.floats(1.5, 60.0),
    st.floats(100.0, 5_000.0),
    st.floats(10.0, 300.0),
    st.floats(-60.0, 60.0),
)
def test_eta_is_distance_over_speed_in_any_direction_speed_and_place(
    bearing: float, speed: float, distance: float, radius: float, lat: float
) -> None:
    start = (10.0, lat)
    second = ahead(speed * 20.0, bearing, start)
    centre = ahead(distance + radius, bearing, second)
    if distance / speed > PREDICTION.horizon_s:
        distance = speed * PREDICTION.horizon_s * 0.9
        centre = ahead(distance + radius, bearing, second)
    if distance / speed < PREDICTION.min_eta_s:  # nearer arrivals are not announced
        distance = speed * PREDICTION.min_eta_s * 1.1
        centre = ahead(distance + radius, bearing, second)

    outcome = process([fix(0, start), fix(20, second)], [circle("A", centre, radius)])

    found = approaches(outcome)
    assert list(found) == ["A"]
    assert found["A"]["eta_s"] == pytest.approx(distance / speed, rel=0.05)


def test_an_arrival_sooner_than_the_minimum_lead_is_not_announced() -> None:
    near = circle("near", ahead(100.0 + 10.0 * (PREDICTION.min_eta_s - 10.0) + 50.0))
    far = circle("far", ahead(100.0 + 10.0 * (PREDICTION.min_eta_s + 10.0) + 50.0), 50.0)

    outcome = process(moving_east(10.0, [0, 10]), [near, far])

    assert list(approaches(outcome)) == ["far"]


def stop_and_go(moving_s: float, stop_s: float, cycles: int, speed: float = 8.0) -> list[Fix]:
    """Drive ``moving_s`` at ``speed``, stand ``stop_s``, repeated; a fix every 10 s."""
    fixes, t, x = [], 0.0, 0.0
    for _ in range(cycles):
        for _ in range(int(moving_s // 10)):
            fixes.append(fix(t, ahead(x)))
            t, x = t + 10.0, x + speed * 10.0
        for _ in range(int(stop_s // 10)):
            fixes.append(fix(t, ahead(x)))
            t += 10.0
    fixes.append(fix(t, ahead(x)))
    fixes.append(fix(t + 10.0, ahead(x + speed * 10.0)))
    return fixes


def test_eta_counts_each_recent_stop_up_to_the_stop_allowance_and_gives_a_band() -> None:
    # 60 s driving at 8 m/s, then a 60 s stop, for 10 minutes: moving speed 8 m/s, average
    # with stops in full 4 m/s, with each stop counted for 20 s 6 m/s
    fixes = stop_and_go(60.0, 60.0, 6)
    last = fixes[-1]
    fence = circle("A", ahead(3_000.0 + 50.0, 90.0, (last.lon, last.lat)))
    records: dict[str, Record] = {}
    for start in range(0, len(fixes), 6):  # an upload a minute, records carried over
        final = start + 6 >= len(fixes)  # the fence is only there at the end (no earlier ETA)
        outcome = process(fixes[start : start + 6], [fence] if final else [], records)
        records = outcome.records

    found = approaches(outcome)["A"]
    window = PREDICTION.average_over_s
    assert PREDICTION.stop_allowance_s == 20.0 and window == 600.0
    assert found["eta_s"] == pytest.approx(3_000.0 / 6.0, rel=0.08)
    assert found["eta_earliest_s"] == pytest.approx(3_000.0 / 8.0, rel=0.08)
    assert found["eta_latest_s"] == pytest.approx(3_000.0 / 4.0, rel=0.1)
    assert found["speed_mps"] == pytest.approx(8.0, rel=0.01)  # the speed of the moment


def test_a_stationary_device_gets_no_prediction() -> None:
    fence = circle("A", ahead(500.0))

    still = process([fix(0, (LON0, LAT0)), fix(30, ahead(2.0))], [fence])  # 2 m: GPS noise
    slow = process([fix(0, (LON0, LAT0)), fix(60, ahead(30.0))], [fence])  # 0.5 m/s
    reported = process([fix(0, (LON0, LAT0), speed_mps=0.4, heading_deg=90.0)], [fence])

    assert approaches(still) == approaches(slow) == approaches(reported) == {}
    assert still.predicted == slow.predicted == reported.predicted == 0


def test_a_single_fix_without_reported_motion_predicts_nothing() -> None:
    assert approaches(process([fix(0, (LON0, LAT0))], [circle("A", ahead(500.0))])) == {}


def test_reported_speed_and_heading_are_used_when_given() -> None:
    east, north = circle("E", ahead(2_050.0, 90.0)), circle("N", ahead(2_050.0, 0.0))

    one_fix = process([fix(0, (LON0, LAT0), speed_mps=20.0, heading_deg=90.0)], [east, north])
    # the track says east at 10 m/s; the last fix reports north at 5 m/s: the report wins
    track = moving_east(10.0, [0, 10])
    turned = [track[0], fix(10, (track[1].lon, track[1].lat), speed_mps=5.0, heading_deg=0.0)]
    north_of_it = circle("N2", ahead(1_050.0, 0.0, (track[1].lon, track[1].lat)))
    reported = process(turned, [circle("E2", ahead(1_150.0)), north_of_it])

    assert list(approaches(one_fix)) == ["E"]
    assert approaches(one_fix)["E"]["eta_s"] == pytest.approx(2_000.0 / 20.0, rel=0.05)
    assert list(approaches(reported)) == ["N2"]
    assert approaches(reported)["N2"]["eta_s"] == pytest.approx(1_000.0 / 5.0, rel=0.05)


def test_an_unreliable_heading_predicts_nothing() -> None:
    """12 m moved with 50 m accuracy: the direction could be anything."""
    fence = circle("A", ahead(300.0))
    vague = [fix(0, (LON0, LAT0), 50.0), fix(5, ahead(12.0), 50.0)]
    sharp = [fix(0, (LON0, LAT0), 2.0), fix(5, ahead(12.0), 2.0)]

    assert approaches(process(vague, [fence])) == {}
    assert list(approaches(process(sharp, [fence]))) == ["A"]


def test_motion_is_unsure_when_the_previous_fix_is_too_old() -> None:
    record = {"p": [LON0, LAT0, 1_000.0], "q": [LON0 - 0.01, LAT0, 1_000.0 - 400.0]}

    assert motion_of("d1", record, None, PREDICTION) is None  # 400 s > 180 s track age


def test_a_fence_behind_or_beside_or_beyond_the_horizon_is_not_approached() -> None:
    behind = circle("behind", ahead(500.0, 270.0))
    beside = circle("beside", ahead(500.0, 0.0, ahead(600.0)))  # 500 m north of the path
    beyond = circle("beyond", ahead(100.0 + 10.0 * 600.0 + 500.0))  # past 600 s at 10 m/s
    in_front = circle("front", ahead(1_500.0))

    outcome = process(moving_east(10.0, [0, 10]), [behind, beside, beyond, in_front])

    assert list(approaches(outcome)) == ["front"]


def test_no_prediction_for_a_fence_the_device_is_already_inside() -> None:
    big = circle("big", ahead(300.0), 500.0)  # the device is inside, heading for its far side
    next_one = circle("next", ahead(1_500.0))

    outcome = process(moving_east(10.0, [0, 10]), [big, next_one])

    assert [t.kind for t in outcome.transitions if t.fence.fence_id == "big"] == ["enter"]
    assert list(approaches(outcome)) == ["next"]


def test_an_approach_is_not_repeated_until_eta_plus_the_repeat_time() -> None:
    fence = circle("A", ahead(2_000.0))  # edge 1850 m from the 10 s fix: ETA 185 s
    first = process(moving_east(10.0, [0, 10]), [fence])
    until = first.records["d1"]["ap"]["A"]

    second = process(moving_east(10.0, [20, 30]), [fence], first.records)
    # the device stalled; 30 s after the announcement ran out it is moving towards A again
    late = int(until - T0.timestamp()) + 30
    stalled = [fix(late - 10, ahead(400.0)), fix(late, ahead(500.0))]
    third = process(stalled, [fence], second.records)

    assert list(approaches(first)) == ["A"]
    assert until == pytest.approx(T0.timestamp() + 10 + 185.0 + PREDICTION.repeat_after_s, abs=2)
    assert approaches(second) == {}
    assert list(approaches(third)) == ["A"]


def test_entering_a_fence_clears_its_announcement() -> None:
    fence = circle("A", ahead(1_200.0))  # edge 1050 m from the 10 s fix: ETA 105 s
    first = process(moving_east(10.0, [0, 10]), [fence])
    announced = dict(first.records["d1"]["ap"])

    inside = process(moving_east(10.0, [110, 120, 130]), [fence], copy.deepcopy(first.records))

    assert list(announced) == ["A"]
    assert [t.kind for t in inside.transitions] == ["enter"]
    assert "A" not in inside.records["d1"].get("ap", {})


def test_a_relocation_is_not_counted_as_distance_travelled() -> None:
    """A phone that really moved 80 km (the second fix there confirms the first) has not
    travelled them at hundreds of metres a second: its ETAs keep its own speed."""
    records: dict[str, Record] = {}
    for s in range(0, 120, 60):  # 10 m/s east for two minutes
        records = process(moving_east(10.0, range(s, s + 60, 10)), [], records).records
    there = ahead(80_000.0, 90.0, ahead(1_200.0))
    for k in range(4):  # then on at 10 m/s, 80 km further east: a jump, confirmed by the next fix
        t = 130 + 10 * k
        here = ahead(100.0 * k, 90.0, there)
        fence = circle(f"A{k}", ahead(2_050.0, 90.0, here))  # its edge 2 km ahead: ETA 200 s
        outcome = process([fix(t, here)], [fence], records)
        records = outcome.records

    # 11 steps of 100 m before, 2 after the confirming fix; not the 80 km between
    assert outcome.records["d1"]["odo"] == pytest.approx(100.0 * 11 + 100.0 * 2, abs=5.0)
    assert approaches(outcome)[f"A{k}"]["eta_s"] == pytest.approx(200.0, abs=5.0)


@pytest.mark.parametrize("path", ["arrays", "state machine"])
def test_an_announcement_that_has_run_out_leaves_the_record(path: str) -> None:
    """A device passes stores it never enters: each announcement is kept only until its ETA
    plus the repeat time, so the record does not grow with every store ever passed."""
    fence = circle("A", ahead(2_000.0))  # edge 1850 m from the 10 s fix: ETA 185 s
    first = process(moving_east(10.0, [0, 10]), [fence])
    until = first.records["d1"]["ap"]["A"]
    records = copy.deepcopy(first.records)
    if path == "state machine":  # a pending jump sends the device through geo.tracking
        records["d1"]["j"] = [*ahead(100.0), T0.timestamp() + 10]
    before = until - T0.timestamp() - 5  # the device turned back: A is no longer ahead
    after = until - T0.timestamp() + 5

    still = process([fix(before, ahead(-100.0))], [fence], copy.deepcopy(records))
    gone = process([fix(after, ahead(-100.0))], [fence], records)

    assert still.records["d1"]["ap"] == {"A": until}
    assert gone.records["d1"]["ap"] == {}


def test_processing_a_batch_leaves_the_callers_records_unchanged() -> None:
    fence, further = circle("A", ahead(400.0)), circle("B", ahead(3_000.0))
    first = process(moving_east(10.0, [0, 10]), [fence])
    for later in ([20, 30, 40], [15]):  # one enters A, one announces B
        records = copy.deepcopy(first.records)
        kept = copy.deepcopy(records)

        process(moving_east(10.0, later), [fence, further], records)

        assert records == kept


def test_a_polygon_fence_is_approached_with_eta_to_its_near_edge() -> None:
    near_x = 100.0 + 900.0  # metres east of (LON0, LAT0) where the square starts
    coslat = math.cos(math.radians(LAT0))
    ring = [
        [LON0 + x / (METRES_PER_DEGREE * coslat), LAT0 + y / METRES_PER_DEGREE]
        for x, y in [(near_x, -40), (near_x + 80, -40), (near_x + 80, 40), (near_x, 40)]
    ]
    square = PolygonFence(
        "P", "s1", PolygonShape({"type": "Polygon", "coordinates": [ring + ring[:1]]})
    )

    found = approaches(process(moving_east(10.0, [0, 10]), [square]))

    assert found["P"]["eta_s"] == pytest.approx(90.0, rel=0.05)
    assert found["P"]["distance_m"] == pytest.approx(900.0, rel=0.01)


def _reference_along(shape: Any, dx: float, dy: float, heading: float, corridor: Any) -> float:
    """How far along the corridor ``shape`` begins, from GEOS's intersection of the two."""
    sin, cos = math.sin(heading), math.cos(heading)
    length, w0, w1 = corridor
    corners = [(0.0, -w0), (length, -w1), (length, w1), (0.0, w0)]
    trapezoid = shapely.Polygon(
        [(dx + u * sin + v * cos, dy + u * cos - v * sin) for u, v in corners]
    )
    common = shapely.intersection(shape, trapezoid)
    if common.is_empty:
        return math.nan
    xy = shapely.get_coordinates(common)
    return float(((xy[:, 0] - dx) * sin + (xy[:, 1] - dy) * cos).min())


def _star(rng: np.random.Generator, size: float, hole: bool) -> Any:
    """A star-shaped polygon (convex or not) around the origin, perhaps with a hole."""
    corners = int(rng.integers(5, 14))  # angular gaps under 0.8 pi: simple, the hole inside
    angles = np.linspace(0.0, 2.0 * math.pi, corners, endpoint=False)
    angles += rng.uniform(0.0, 2.0 * math.pi / corners, corners)
    radii = rng.uniform(0.3, 1.0, angles.size) * size
    shell = np.column_stack((radii * np.cos(angles), radii * np.sin(angles)))
    holes = []
    if hole:
        r = 0.25 * float(radii.min())
        holes = [[(r * math.cos(a), r * math.sin(a)) for a in np.linspace(0, 6, 6)]]
    return shapely.Polygon(shell, holes)


@pytest.mark.parametrize("seed", range(4))
def test_polygon_along_matches_the_intersection_of_corridor_and_polygon(seed: int) -> None:
    """Where the corridor first meets each polygon, against GEOS's intersection: stars, holes,
    multipolygons, devices far off, beside, inside, and polygons reaching far behind them."""
    rng = np.random.default_rng(seed)
    count = 400
    shapes, devices, headings, corridors = [], [], [], []
    for k in range(count):
        size = float(rng.choice([20.0, 60.0, 400.0]))
        shape = _star(rng, size, hole=k % 3 == 0)
        if k % 5 == 0:  # two parts
            shape = shapely.union(
                shape, shapely.affinity.translate(_star(rng, size, False), 3 * size)
            )
        shapes.append(shape)
        distance = float(rng.choice([0.0, 0.5, 3.0, 15.0])) * size + rng.uniform(0, 50)
        bearing = rng.uniform(0, 2 * math.pi)
        devices.append((distance * math.sin(bearing), distance * math.cos(bearing)))
        aim = math.atan2(-devices[-1][0], -devices[-1][1])  # towards the polygon, give or take
        headings.append(aim + rng.normal(0.0, 0.6))
        length = rng.uniform(600.0, 1500.0)
        w0 = rng.uniform(15.0, 60.0)
        corridors.append((length, w0, w0 + length * math.tan(math.radians(rng.uniform(0, 35)))))
    dx, dy = (np.array(c) for c in zip(*devices, strict=True))
    theta = np.array(headings)
    length, w0, w1 = (np.array(c) for c in zip(*corridors, strict=True))
    sin, cos = np.sin(theta), np.cos(theta)
    got = np.concatenate(  # a few pairs per call, as in a batch: most reach nowhere behind
        [
            _polygon_along(
                np.array(shapes[k : k + 4], dtype=object),
                *(v[k : k + 4] for v in (dx, dy, sin, cos, length, w0, w1)),
            )
            for k in range(0, count, 4)
        ]
    )
    expected = np.array(
        [
            _reference_along(s, x, y, h, c)
            for s, x, y, h, c in zip(shapes, dx, dy, theta, corridors, strict=True)
        ]
    )
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    met = ~np.isnan(expected)
    assert 0.2 * count < met.sum() < count  # some miss, most meet
    assert got[met] == pytest.approx(expected[met], rel=1e-9, abs=1e-6)


def test_a_polygon_in_the_corridors_box_but_off_the_corridor_is_not_approached() -> None:
    """Heading north-east, a store 500 m due north lies in the box around the corridor, far
    from the corridor itself; one 500 m ahead is approached."""
    coslat = math.cos(math.radians(LAT0))

    def square(fence_id: str, centre: tuple[float, float]) -> PolygonFence:
        ring = [
            [centre[0] + x / (METRES_PER_DEGREE * coslat), centre[1] + y / METRES_PER_DEGREE]
            for x, y in [(-20, -20), (20, -20), (20, 20), (-20, 20), (-20, -20)]
        ]
        return PolygonFence(
            fence_id, "s1", PolygonShape({"type": "Polygon", "coordinates": [ring]})
        )

    fixes = [fix(s, ahead(1.4 * s, 45.0)) for s in (0, 10)]
    start = ahead(14.0, 45.0)
    aside = square("N", ahead(500.0, 0.0, start))

    assert approaches(process(fixes, [aside])) == {}
    found = approaches(process(fixes, [aside, square("A", ahead(500.0, 45.0, start))]))
    assert set(found) == {"A"}
    assert found["A"]["eta_s"] == pytest.approx(480.0 / 1.4, rel=0.02)


@pytest.mark.parametrize("seed", range(3))
def test_polygon_approaches_match_geos_in_the_devices_frame(seed: int) -> None:
    """``predict`` over many polygon fences near a device (in the corridor, in its box only,
    behind, around the device): the fences announced and their ETAs against the corridor
    intersected with each fence by GEOS, in the device's own metric frame."""
    rng = np.random.default_rng(seed)
    coslat = math.cos(math.radians(LAT0))
    fences, local = [], []
    for k in range(150):
        east, north = rng.uniform(-2500.0, 2500.0, 2)
        shape = shapely.affinity.translate(
            _star(rng, float(rng.choice([15.0, 40.0, 150.0])), k % 4 == 0), east, north
        )
        local.append(shape)
        lonlat = shapely.transform(
            shape, lambda xy: xy / [METRES_PER_DEGREE * coslat, METRES_PER_DEGREE] + [LON0, LAT0]
        )
        geojson = json.loads(shapely.to_geojson(lonlat))
        fences.append(PolygonFence(f"P{k}", "s1", PolygonShape(geojson)))
    index = FenceIndex(fences)
    rules = PredictionRules()
    checked = 0
    for _ in range(20):
        speed = float(rng.uniform(1.5, 4.0))
        motion = Motion(
            "d1",
            LON0,
            LAT0,
            0.0,
            speed,
            float(rng.uniform(0, 360)),
            15.0,
            10.0,
            speed,
            speed,
            speed,
        )
        found = {
            index.fences[a.fence_idx].fence_id: a.eta_s
            for a in predict(index, [motion], [set()], rules)
        }
        corridor = (speed * rules.horizon_s, rules.base_width_m + 10.0, 0.0)
        corridor = (
            corridor[0],
            corridor[1],
            corridor[1] + corridor[0] * math.tan(math.radians(15.0)),
        )
        heading = math.radians(motion.heading_deg)
        for fence, shape in zip(fences, local, strict=True):
            along = _reference_along(shape, 0.0, 0.0, heading, corridor)
            eta = along / speed
            if math.isnan(eta) or abs(eta - rules.min_eta_s) < 1.0:
                assert fence.fence_id not in found or not math.isnan(eta)
                continue
            if eta >= rules.min_eta_s:
                checked += 1
                assert found[fence.fence_id] == pytest.approx(eta, abs=0.5)
            else:
                assert fence.fence_id not in found
    assert checked > 20


def test_few_corridors_in_plain_floats_equal_many_as_arrays() -> None:
    """The two layouts of ``_corridors`` agree, near the antimeridian and the poles too."""
    rng = np.random.default_rng(5)
    motions = [
        Motion(
            f"d{k}",
            float(rng.choice([rng.uniform(-180, 180), rng.uniform(179.9, 180), -179.95])),
            float(rng.choice([rng.uniform(-60, 60), 89.99])),
            0.0,
            float(rng.uniform(1, 70)),
            float(rng.uniform(0, 360)),
            float(rng.uniform(5, 35)),
            float(rng.uniform(0, 50)),
            1.0,
            1.0,
            1.0,
        )
        for k in range(200)
    ]
    rules = PredictionRules()
    many = _corridors(motions, rules)
    few = np.vstack([_corridors([m], rules) for m in motions])
    assert len(motions) > _FEW_MOTIONS
    assert few == pytest.approx(many, rel=1e-12, abs=1e-9)
    beyond = (many[:, 13] < -180.0) | (many[:, 15] > 180.0)  # the box's west and east
    assert 0 < beyond.sum() < len(motions)


def test_prediction_off_gives_no_approaches() -> None:
    matcher = BatchMatcher(TrackingRules(), None)
    batch = FixBatch.of(moving_east(10.0, [0, 10]))

    outcome = matcher.process(FenceIndex([circle("A", ahead(800.0))]), batch, {})

    assert outcome.transitions == [] and outcome.predicted == 0


def test_a_fence_across_the_antimeridian_is_approached() -> None:
    start = (179.98, 0.0)
    second = ahead(100.0, 90.0, start)
    fence = circle("A", ahead(3_000.0 + 100.0, 90.0, second), 100.0)  # centre at about -179.99

    found = approaches(process([fix(0, start), fix(10, second)], [fence]))

    assert fence.lon < 0
    assert found["A"]["eta_s"] == pytest.approx(300.0, rel=0.05)


# --- opening hours --------------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def helsinki(*args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(HELSINKI))


SUNDAY_3_TO_4 = {"sun": [["03:00", "04:00"]]}


def test_the_hour_that_does_not_exist_on_the_spring_dst_sunday_is_never_open() -> None:
    # Sunday 29 March 2026: at 01:00 UTC Helsinki goes from 03:00 EET straight to 04:00 EEST.
    day = [utc(2026, 3, 28, 22, 0) + timedelta(minutes=m) for m in range(0, 24 * 60, 5)]
    week_before = [t - timedelta(days=7) for t in day]

    assert [t for t in day if is_open(SUNDAY_3_TO_4, HELSINKI, t)] == []
    opened = [t for t in week_before if is_open(SUNDAY_3_TO_4, HELSINKI, t)]
    assert (opened[0], opened[-1]) == (utc(2026, 3, 22, 1, 0), utc(2026, 3, 22, 1, 55))


def test_the_hour_that_happens_twice_on_the_autumn_dst_sunday_is_open_twice() -> None:
    # Sunday 25 October 2026: at 01:00 UTC Helsinki goes from 04:00 EEST back to 03:00 EET.
    day = [utc(2026, 10, 24, 21, 0) + timedelta(minutes=m) for m in range(0, 24 * 60, 5)]

    opened = [t for t in day if is_open(SUNDAY_3_TO_4, HELSINKI, t)]

    assert opened[0] == utc(2026, 10, 25, 0, 0)  # 03:00 EEST
    assert opened[-1] == utc(2026, 10, 25, 1, 55)  # 03:55 EET
    assert len(opened) == 24  # two hours of five-minute steps
    assert not is_open(SUNDAY_3_TO_4, HELSINKI, utc(2026, 10, 25, 2, 0))  # 04:00 EET


def test_opening_time_follows_the_zone_offset_on_the_day_it_changes() -> None:
    hours = {"sun": [["08:00", "20:00"]]}

    assert not is_open(hours, HELSINKI, utc(2026, 3, 29, 4, 59))  # 07:59 EEST
    assert is_open(hours, HELSINKI, utc(2026, 3, 29, 5, 0))  # 08:00 EEST
    assert not is_open(hours, HELSINKI, utc(2026, 3, 22, 5, 30))  # a week earlier: 07:30 EET
    assert local_time(utc(2026, 3, 29, 5, 0), HELSINKI).hour == 8


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (helsinki(2026, 11, 27, 21, 59), False),  # Friday before opening
        (helsinki(2026, 11, 27, 22, 0), True),
        (helsinki(2026, 11, 27, 23, 59), True),
        (helsinki(2026, 11, 28, 0, 0), True),  # Saturday, after midnight: Friday's range
        (helsinki(2026, 11, 28, 1, 59), True),
        (helsinki(2026, 11, 28, 2, 0), False),
        (helsinki(2026, 11, 28, 21, 0), False),  # Saturday evening: closed (no Saturday hours)
        (helsinki(2026, 11, 30, 1, 0), True),  # Monday night: Sunday's range wraps to Monday
        (helsinki(2026, 11, 30, 3, 0), False),
        (helsinki(2026, 11, 26, 12, 0), False),  # Thursday: absent, closed all day
        (helsinki(2026, 11, 25, 12, 0), False),  # Wednesday: an empty list, closed
    ],
)
def test_overnight_ranges_and_closed_days(local: datetime, expected: bool) -> None:
    hours = {"fri": [["22:00", "02:00"]], "sun": [["23:00", "02:30"]], "wed": []}

    assert is_open(hours, HELSINKI, local.astimezone(UTC)) is expected


def test_a_range_to_24_00_closes_at_midnight_and_split_days_have_a_gap() -> None:
    hours = {"sat": [["09:00", "12:00"], ["18:00", "24:00"]]}

    assert is_open(hours, HELSINKI, helsinki(2026, 11, 28, 11, 59))
    assert not is_open(hours, HELSINKI, helsinki(2026, 11, 28, 12, 0))
    assert is_open(hours, HELSINKI, helsinki(2026, 11, 28, 23, 59))
    assert not is_open(hours, HELSINKI, helsinki(2026, 11, 29, 0, 0))


def test_no_hours_means_always_open_and_the_zone_decides_the_day() -> None:
    hours = {"mon": [["00:00", "24:00"]]}
    monday_in_helsinki = utc(2026, 11, 29, 22, 30)  # still Sunday in UTC and New York

    assert is_open(None, HELSINKI, T0)
    assert is_open(hours, HELSINKI, monday_in_helsinki)
    assert not is_open(hours, "America/New_York", monday_in_helsinki)


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ([["08:00", "20:00"]], "opening_hours must be an object keyed by day"),
        ({"monday": [["08:00", "20:00"]]}, "unknown day 'monday'; use one of mon, tue"),
        ({"mon": "08:00-20:00"}, "mon: a list of \\[open, close\\] pairs is expected"),
        ({"mon": [["8:00", "20:00"]]}, 'is not an \\["HH:MM", "HH:MM"\\] pair'),
        ({"tue": [["08:00", "24:30"]]}, "tue: .* is not an"),
        ({"mon": [["08:00"]]}, "is not an"),
        ({"mon": [["08:00", 20]]}, "is not an"),
        ({"mon": [["08:00", "08:00"]]}, "mon: .* is an empty range"),
        ({"sun": [["24:00", "08:00"]]}, "sun: .* is an empty range"),
    ],
)
def test_invalid_hours_are_refused_with_a_message(hours: Any, message: str) -> None:
    with pytest.raises(InvalidOpeningHours, match=message) as caught:
        validate_hours(hours)
    assert caught.value.code == "invalid_opening_hours"


def test_valid_hours_are_returned_as_lists() -> None:
    assert validate_hours(None) is None
    assert validate_hours({"mon": [("08:00", "24:00")], "sat": []}) == {
        "mon": [["08:00", "24:00"]],
        "sat": [],
    }


# --- eligibility ----------------------------------------------------------------------------

STORE = StoreInfo("Kamppi", HELSINKI, {"mon": [["08:00", "20:00"]]})
FENCE = CircleFence("F", "s1", LON0, LAT0, 100.0)


def transition(kind: str, at: datetime, **details: float) -> Transition:
    return Transition("d1", FENCE, kind, at, dict(details))


def test_entering_a_closed_store_is_not_eligible() -> None:
    at = helsinki(2026, 11, 23, 7, 30)  # Monday before opening

    assert eligibility(transition("enter", at), STORE) == (False, "store_closed")
    assert eligibility(transition("enter", helsinki(2026, 11, 24, 12, 0)), STORE) == (
        False,
        "store_closed",
    )  # Tuesday: closed all day


def test_entering_an_open_store_is_eligible() -> None:
    assert eligibility(transition("enter", helsinki(2026, 11, 23, 8, 0)), STORE) == (True, None)


def test_an_approach_is_judged_at_the_predicted_arrival() -> None:
    at = helsinki(2026, 11, 23, 7, 50)

    arriving_after_opening = transition("approaching", at, eta_s=900.0)
    arriving_before = transition("approaching", at, eta_s=300.0)
    arriving_after_closing = transition("approaching", helsinki(2026, 11, 23, 19, 55), eta_s=600.0)

    assert eligibility(arriving_after_opening, STORE) == (True, None)
    assert eligibility(arriving_before, STORE) == (False, "store_closed")
    assert eligibility(arriving_after_closing, STORE) == (False, "store_closed")


def test_an_unknown_store_is_not_eligible() -> None:
    assert eligibility(transition("enter", T0), None) == (False, "unknown_store")


def test_an_approach_whose_arrival_has_passed_is_not_current() -> None:
    announced = transition("approaching", T0, eta_s=300.0)

    assert timeliness(announced, T0 + timedelta(seconds=299)) == (True, None)
    assert timeliness(announced, T0 + timedelta(seconds=300)) == (False, "arrival_passed")


def test_an_enter_or_dwell_heard_of_too_late_is_not_current() -> None:
    for kind in ("enter", "dwell"):
        event = transition(kind, T0)

        assert timeliness(event, T0 + timedelta(minutes=5)) == (True, None)
        assert timeliness(event, T0 + timedelta(minutes=5, seconds=1)) == (False, "stale_trigger")
        assert timeliness(event, T0 + timedelta(hours=2), timedelta(days=1)) == (True, None)
    assert timeliness(transition("exit", T0), T0 + timedelta(hours=1)) == (True, None)
