"""Pure geofence rules (geo/domain.py): fence validation, matching and presence transitions."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geo.domain import (
    EARTH_RADIUS_M,
    MAX_RADIUS_M,
    CircleFence,
    FenceIndex,
    Fix,
    InvalidFence,
    Transition,
    advance_presence,
    haversine_m,
    validate_circle,
)

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MAX_ACCURACY_M = 100.0


# --- builders -------------------------------------------------------------------------------


def fence(
    fence_id: str = "f1",
    lon: float = 13.4,
    lat: float = 52.5,
    radius_m: float = 100.0,
    store_id: str = "s1",
) -> CircleFence:
    return CircleFence(fence_id, store_id, lon, lat, radius_m)


def fix_at(minutes: float, accuracy_m: float | None = 10.0, device_id: str = "d1") -> Fix:
    return Fix(device_id, 13.4, 52.5, T0 + timedelta(minutes=minutes), accuracy_m)


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    found = haversine_m(np.array([lon1]), np.array([lat1]), np.array([lon2]), np.array([lat2]))
    return float(found[0])


def destination(lon: float, lat: float, bearing_deg: float, distance: float) -> tuple[float, float]:
    """The point ``distance`` metres from (lon, lat) along ``bearing_deg`` on the sphere."""
    phi1, lmb1 = math.radians(lat), math.radians(lon)
    theta, delta = math.radians(bearing_deg), distance / EARTH_RADIUS_M
    phi2 = math.asin(
        math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    )
    lmb2 = lmb1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * math.sin(phi2),
    )
    lon2 = (math.degrees(lmb2) + 180.0) % 360.0 - 180.0
    return lon2, math.degrees(phi2)


def brute_force(fences: list[CircleFence], lons: list[float], lats: list[float]) -> list[list[str]]:
    return [
        sorted(f.fence_id for f in fences if distance_m(lon, lat, f.lon, f.lat) <= f.radius_m)
        for lon, lat in zip(lons, lats, strict=True)
    ]


def matched_ids(index: FenceIndex, lons: list[float], lats: list[float]) -> list[list[str]]:
    return [sorted(f.fence_id for f in found) for found in index.match(lons, lats)]


# --- validate_circle ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat", "radius_m", "names"),
    [
        (180.01, 0.0, 100.0, "longitude"),
        (-180.5, 0.0, 100.0, "longitude"),
        (math.nan, 0.0, 100.0, "longitude"),
        (math.inf, 0.0, 100.0, "longitude"),
        (0.0, 90.1, 100.0, "latitude"),
        (0.0, -91.0, 100.0, "latitude"),
        (0.0, math.nan, 100.0, "latitude"),
        (0.0, -math.inf, 100.0, "latitude"),
        (0.0, 0.0, 0.0, "radius"),
        (0.0, 0.0, -5.0, "radius"),
        (0.0, 0.0, math.nan, "radius"),
        (0.0, 0.0, math.inf, "radius"),
        (0.0, 0.0, MAX_RADIUS_M + 1, "radius"),
        (0.0, 0.0, 0.5, "radius"),
    ],
)
def test_validate_circle_refuses_with_a_message_naming_the_problem(
    lon: float, lat: float, radius_m: float, names: str
) -> None:
    with pytest.raises(InvalidFence, match=names) as caught:
        validate_circle(lon, lat, radius_m)
    assert caught.value.code == "invalid_fence"


def test_radius_above_fifty_km_names_the_supported_range() -> None:
    with pytest.raises(InvalidFence, match=r"outside the supported range \[1, 50000\] m"):
        validate_circle(0.0, 0.0, 50_000.1)


def test_non_positive_radius_says_it_must_be_positive() -> None:
    with pytest.raises(InvalidFence, match="positive"):
        validate_circle(0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("lon", "lat", "radius_m"),
    [(-180.0, -90.0, 1.0), (180.0, 90.0, MAX_RADIUS_M), (13.4, 52.5, 150.0)],
)
def test_validate_circle_accepts_the_edges_of_the_ranges(
    lon: float, lat: float, radius_m: float
) -> None:
    validate_circle(lon, lat, radius_m)


def test_a_circle_fence_cannot_be_built_invalid() -> None:
    with pytest.raises(InvalidFence, match="latitude"):
        CircleFence("f", "s", 0.0, 95.0, 100.0)


# --- FenceIndex.match -----------------------------------------------------------------------


def test_a_point_at_the_centre_matches() -> None:
    f = fence()
    assert FenceIndex([f]).match([f.lon], [f.lat]) == [[f]]


def test_a_point_just_outside_the_radius_does_not_match() -> None:
    f = fence(radius_m=100.0)
    lon, lat = destination(f.lon, f.lat, 90.0, 100.5)
    assert distance_m(lon, lat, f.lon, f.lat) > f.radius_m

    assert FenceIndex([f]).match([lon], [lat]) == [[]]


def test_a_point_well_inside_but_off_centre_matches() -> None:
    f = fence(radius_m=100.0)
    lon, lat = destination(f.lon, f.lat, 45.0, 90.0)
    assert FenceIndex([f]).match([lon], [lat]) == [[f]]


def test_an_empty_index_matches_nothing_for_every_point() -> None:
    index = FenceIndex([])
    assert len(index) == 0
    assert index.match([13.4, 0.0], [52.5, 0.0]) == [[], []]


def test_no_points_give_no_results() -> None:
    assert FenceIndex([fence()]).match([], []) == []


def test_one_point_inside_overlapping_fences_matches_each() -> None:
    a = fence("a", radius_m=200.0)
    b = fence("b", lon=13.4005, radius_m=200.0)
    far = fence("far", lon=2.35, lat=48.85)

    result = FenceIndex([a, b, far]).match([13.4002], [52.5])

    assert sorted(f.fence_id for f in result[0]) == ["a", "b"]


def test_many_fences_and_points_each_point_gets_its_own_fence() -> None:
    fences = [
        fence(f"f{i}", lon=-120.0 + i * 0.5, lat=-60.0 + i * 0.25, radius_m=250.0)
        for i in range(400)
    ]
    index = FenceIndex(fences, version=7)
    lons = [f.lon for f in fences] + [150.0]
    lats = [f.lat for f in fences] + [70.0]

    result = index.match(lons, lats)

    assert index.version == 7
    assert [[f.fence_id for f in r] for r in result] == [[f.fence_id] for f in fences] + [[]]
    assert index.by_id["f17"] is fences[17]


def test_a_point_just_inside_the_radius_due_north_matches() -> None:
    f = fence(radius_m=1000.0)
    lon, lat = destination(f.lon, f.lat, 0.0, 999.5)
    assert distance_m(lon, lat, f.lon, f.lat) <= f.radius_m

    assert FenceIndex([f]).match([lon], [lat]) == [[f]]


def test_a_fence_at_the_antimeridian_matches_points_across_it() -> None:
    f = fence(lon=179.999, lat=0.0, radius_m=1000.0)
    lon, lat = -179.9995, 0.0
    assert distance_m(lon, lat, f.lon, f.lat) < 200.0

    assert FenceIndex([f]).match([lon], [lat]) == [[f]]


fences_strategy = st.lists(
    st.builds(
        lambda i, lon, lat, r: CircleFence(f"f{i}", "s", lon, lat, r),
        st.integers(0, 10**6),
        st.floats(-180.0, 180.0),
        st.floats(-80.0, 80.0),
        st.floats(1.0, MAX_RADIUS_M),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda f: f.fence_id,
)
# (index of the fence the point is near, bearing in degrees, distance as a fraction of its radius)
offsets_strategy = st.lists(
    st.tuples(st.integers(0, 5), st.floats(0.0, 360.0), st.floats(0.0, 2.0)),
    min_size=1,
    max_size=12,
)


def points_near(
    fences: list[CircleFence], offsets: list[tuple[int, float, float]]
) -> tuple[list[float], list[float]]:
    points = [
        destination(
            fences[i % len(fences)].lon,
            fences[i % len(fences)].lat,
            bearing,
            fraction * fences[i % len(fences)].radius_m,
        )
        for i, bearing, fraction in offsets
    ]
    return [p[0] for p in points], [p[1] for p in points]


@settings(deadline=None)
@given(fences_strategy, offsets_strategy)
@example([CircleFence("f0", "s", 10.0, 50.0, 1000.0)], [(0, 0.0, 0.9995)])
@example([CircleFence("f0", "s", 179.999, 0.0, 1000.0)], [(0, 90.0, 0.5)])
def test_match_agrees_exactly_with_brute_force_haversine(
    fences: list[CircleFence], offsets: list[tuple[int, float, float]]
) -> None:
    lons, lats = points_near(fences, offsets)
    assert matched_ids(FenceIndex(fences), lons, lats) == brute_force(fences, lons, lats)


@settings(deadline=None)
@given(
    fences_strategy.filter(lambda fs: all(abs(f.lon) <= 170.0 for f in fs)),
    offsets_strategy,
)
def test_match_agrees_with_brute_force_away_from_the_rim_and_the_antimeridian(
    fences: list[CircleFence], offsets: list[tuple[int, float, float]]
) -> None:
    """What holds today: exact agreement for every point not within 2% of any fence's rim."""
    lons, lats = points_near(fences, offsets)
    kept = [
        (lon, lat)
        for lon, lat in zip(lons, lats, strict=True)
        if all(abs(distance_m(lon, lat, f.lon, f.lat) / f.radius_m - 1.0) > 0.02 for f in fences)
    ]
    lons, lats = [p[0] for p in kept], [p[1] for p in kept]

    assert matched_ids(FenceIndex(fences), lons, lats) == brute_force(fences, lons, lats)


# --- advance_presence -----------------------------------------------------------------------


F1 = fence("f1")
F2 = fence("f2", lon=13.41)
FENCES_BY_ID = {F1.fence_id: F1, F2.fence_id: F2}


def advance(
    record: Mapping[str, object] | None, *fixes: tuple[Fix, list[CircleFence]]
) -> tuple[dict[str, object], list[Transition]]:
    return advance_presence("d1", record, list(fixes), FENCES_BY_ID, MAX_ACCURACY_M)


def test_first_fix_inside_a_fence_enters_it() -> None:
    record, transitions = advance(None, (fix_at(0), [F1]))

    assert transitions == [Transition("d1", F1, "enter", T0)]
    assert record == {"inside": {"f1": T0.isoformat()}, "last_fix_at": T0.isoformat()}


def test_staying_inside_does_not_enter_again_and_keeps_the_entry_time() -> None:
    record, _ = advance(None, (fix_at(0), [F1]))

    record, transitions = advance(record, (fix_at(1), [F1]), (fix_at(2), [F1]))

    assert transitions == []
    assert record["inside"] == {"f1": T0.isoformat()}
    assert record["last_fix_at"] == (T0 + timedelta(minutes=2)).isoformat()


def test_leaving_a_fence_exits_it_at_the_fix_time() -> None:
    record, _ = advance(None, (fix_at(0), [F1, F2]))

    record, transitions = advance(record, (fix_at(3), [F2]))

    assert transitions == [Transition("d1", F1, "exit", T0 + timedelta(minutes=3))]
    assert record["inside"] == {"f2": T0.isoformat()}


def test_a_fence_that_no_longer_exists_is_dropped_without_an_exit() -> None:
    record = {"inside": {"gone": T0.isoformat()}, "last_fix_at": T0.isoformat()}

    new, transitions = advance(record, (fix_at(1), []))

    assert transitions == []
    assert new["inside"] == {}


def test_a_fix_outside_with_no_record_changes_only_the_last_fix_time() -> None:
    record, transitions = advance(None, (fix_at(0), []))

    assert transitions == []
    assert record == {"inside": {}, "last_fix_at": T0.isoformat()}


def test_no_fixes_and_no_record_give_an_empty_record() -> None:
    assert advance(None) == ({"inside": {}}, [])


@pytest.mark.parametrize("minutes", [0, -1, -60])
def test_a_fix_not_newer_than_the_last_one_changes_nothing(minutes: int) -> None:
    record, _ = advance(None, (fix_at(0), [F1]))

    new, transitions = advance(record, (fix_at(minutes), []), (fix_at(minutes), [F2]))

    assert transitions == []
    assert new == record


def test_an_inaccurate_fix_is_not_used_for_transitions() -> None:
    record, _ = advance(None, (fix_at(0), [F1]))

    new, transitions = advance(record, (fix_at(1, accuracy_m=MAX_ACCURACY_M + 0.1), [F2]))

    assert transitions == []
    assert new["inside"] == {"f1": T0.isoformat()}, "no exit from f1, no entry into f2"


def test_an_inaccurate_fix_still_moves_the_last_fix_time() -> None:
    """Current behaviour: the inaccurate fix counts as processed, so an older accurate fix that
    arrives after it is ignored."""
    record, _ = advance(None, (fix_at(0), [F1]))
    record, _ = advance(record, (fix_at(5, accuracy_m=5_000.0), []))
    assert record["last_fix_at"] == (T0 + timedelta(minutes=5)).isoformat()

    late, transitions = advance(record, (fix_at(3), []))

    assert transitions == []
    assert late == record


def test_a_fix_exactly_at_the_accuracy_limit_is_used() -> None:
    _, transitions = advance(None, (fix_at(0, accuracy_m=MAX_ACCURACY_M), [F1]))
    assert [t.kind for t in transitions] == ["enter"]


def test_a_fix_without_accuracy_is_used() -> None:
    _, transitions = advance(None, (fix_at(0, accuracy_m=None), [F1]))
    assert [t.kind for t in transitions] == ["enter"]


def test_an_unsorted_batch_is_processed_in_event_time_order() -> None:
    record, transitions = advance(None, (fix_at(2), []), (fix_at(1), [F1]), (fix_at(3), [F2]))

    assert transitions == [
        Transition("d1", F1, "enter", T0 + timedelta(minutes=1)),
        Transition("d1", F1, "exit", T0 + timedelta(minutes=2)),
        Transition("d1", F2, "enter", T0 + timedelta(minutes=3)),
    ]
    assert record["last_fix_at"] == (T0 + timedelta(minutes=3)).isoformat()


def test_the_record_survives_a_json_round_trip() -> None:
    record, _ = advance(None, (fix_at(0), [F1]))

    stored = json.loads(json.dumps(record))
    again, transitions = advance(stored, (fix_at(1), []))

    assert [t.kind for t in transitions] == ["exit"]
    assert again["inside"] == {}


batch_strategy = st.lists(
    st.tuples(
        st.integers(0, 10_000),  # seconds after T0; made unique below
        st.sampled_from([[], [F1], [F2], [F1, F2]]),
        st.one_of(st.none(), st.floats(0.0, 2 * MAX_ACCURACY_M)),
    ),
    max_size=12,
    unique_by=lambda item: item[0],
)


@given(
    batch_strategy,
    st.sampled_from(
        [
            None,
            {
                "inside": {"f1": T0.isoformat()},
                "last_fix_at": (T0 + timedelta(seconds=50)).isoformat(),
            },
        ]
    ),
    st.randoms(use_true_random=False),
)
def test_any_order_of_the_same_batch_gives_the_same_result(
    batch: list[tuple[int, list[CircleFence], float | None]],
    record: dict[str, object] | None,
    rnd: random.Random,
) -> None:
    fixes = [
        (Fix("d1", 0.0, 0.0, T0 + timedelta(seconds=s), acc), matched) for s, matched, acc in batch
    ]
    shuffled = list(fixes)
    rnd.shuffle(shuffled)

    in_order = advance(record, *sorted(fixes, key=lambda pair: pair[0].recorded_at))
    any_order = advance(record, *shuffled)

    assert any_order == in_order


def test_fixes_with_the_same_time_give_the_same_result_in_any_order() -> None:
    inside: tuple[Fix, list[CircleFence]] = (fix_at(1), [F1])
    outside: tuple[Fix, list[CircleFence]] = (fix_at(1), [])

    assert advance(None, inside, outside) == advance(None, outside, inside)
