"""Pure geofence rules (geo/domain.py): fence validation, the fence index (matching, signed
distances, candidates) and the columnar fix batch. Presence over time is in test_tracking.py."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geo.domain import (
    MAX_RADIUS_M,
    CircleFence,
    FenceIndex,
    Fix,
    FixBatch,
    PolygonFence,
    haversine_m,
    step_lengths_m,
    validate_circle,
)
from geo.geometry import (
    EARTH_RADIUS_M,
    METRES_PER_DEGREE,
    InvalidFence,
    PolygonShape,
    wrap_lon_delta,
)

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


# --- builders -------------------------------------------------------------------------------


def fence(
    fence_id: str = "f1",
    lon: float = 13.4,
    lat: float = 52.5,
    radius_m: float = 100.0,
    store_id: str = "s1",
) -> CircleFence:
    return CircleFence(fence_id, store_id, lon, lat, radius_m)


def square(lon: float, lat: float, half_m: float) -> list[list[float]]:
    """A closed square ring of side 2 * half_m metres centred on (lon, lat)."""
    dlon = half_m / (METRES_PER_DEGREE * math.cos(math.radians(lat)))
    dlat = half_m / METRES_PER_DEGREE
    return [
        [lon - dlon, lat - dlat],
        [lon + dlon, lat - dlat],
        [lon + dlon, lat + dlat],
        [lon - dlon, lat + dlat],
        [lon - dlon, lat - dlat],
    ]


def square_fence(fence_id: str, lon: float, lat: float, half_m: float) -> PolygonFence:
    shape = PolygonShape({"type": "Polygon", "coordinates": [square(lon, lat, half_m)]})
    return PolygonFence(fence_id, "s1", shape)


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


# --- polygons in the index, signed distances, candidates ------------------------------------


def test_a_polygon_fence_matches_inside_and_not_outside_its_edge() -> None:
    f = square_fence("sq", 13.4, 52.5, 50.0)
    inside = destination(13.4, 52.5, 90.0, 49.0)
    outside = destination(13.4, 52.5, 90.0, 51.0)

    result = FenceIndex([f]).match([inside[0], outside[0]], [inside[1], outside[1]])

    assert result == [[f], []]


def test_signed_distances_are_negative_inside_and_measured_in_metres() -> None:
    circle = fence("c", radius_m=100.0)
    polygon = square_fence("sq", 13.41, 52.5, 50.0)
    index = FenceIndex([circle, polygon])
    points = [
        destination(circle.lon, circle.lat, 0.0, 30.0),  # 70 m inside the circle
        destination(circle.lon, circle.lat, 0.0, 130.0),  # 30 m outside it
        (13.41, 52.5),  # the square's centre: 50 m from every side
        destination(13.41, 52.5, 90.0, 80.0),  # 30 m east of the east side
    ]
    lons = np.array([p[0] for p in points])
    lats = np.array([p[1] for p in points])

    found = index.signed_distances(lons, lats, np.array([0, 0, 1, 1], dtype=np.intp))

    np.testing.assert_allclose(found, [-70.0, 30.0, -50.0, 30.0], atol=0.05)


def test_candidates_give_the_pairs_inside_and_whether_each_is_deep_enough() -> None:
    a = fence("a", radius_m=100.0)
    b = square_fence("b", 13.4, 52.5, 40.0)
    far = fence("far", lon=2.35, lat=48.85)
    index = FenceIndex([a, b, far])
    near_edge = destination(13.4, 52.5, 0.0, 70.0)  # in a (30 m deep), outside b
    lons = np.array([13.4, near_edge[0], 100.0])
    lats = np.array([52.5, near_edge[1], 0.0])

    point_idx, fence_idx, deep = index.candidates(lons, lats, np.array([39.0, 31.0, 0.0]))

    pairs = [
        (int(p), index.fences[int(f)].fence_id, bool(d))
        for p, f, d in zip(point_idx, fence_idx, deep, strict=True)
    ]
    # Point 0 is 100 m inside a and 40 m inside b (>= 39 asked); point 1 is 30 m inside a (< 31).
    assert pairs == [(0, "a", True), (0, "b", True), (1, "a", False)]
    _, _, deeper = index.candidates(lons, lats, np.array([41.0, 29.0, 0.0]))
    assert deeper.tolist() == [True, False, True]
    _, _, unasked = index.candidates(lons, lats)
    assert unasked.tolist() == [True, True, True]


def test_candidates_of_an_empty_index_or_no_points_are_empty() -> None:
    empty = np.array([], dtype=np.float64)
    for index, lons in ((FenceIndex([]), np.array([13.4])), (FenceIndex([fence()]), empty)):
        point_idx, fence_idx, deep = index.candidates(lons, lons)
        assert point_idx.size == fence_idx.size == deep.size == 0


def irregular_fences(rng: np.random.Generator, count: int) -> list[PolygonFence | CircleFence]:
    """Stars (concave, some with the centroid outside), squares with a hole, circles."""
    fences: list[PolygonFence | CircleFence] = []
    for i in range(count):
        lon, lat = 13.4 + rng.uniform(-0.003, 0.003), 52.5 + rng.uniform(-0.002, 0.002)
        kind = i % 3
        if kind == 0:
            points = int(rng.integers(5, 9))
            angles = np.linspace(0, 2 * math.pi, 2 * points, endpoint=False)
            radii = np.where(np.arange(2 * points) % 2 == 0, 80.0, rng.uniform(5, 40))
            ring = [
                list(destination(lon, lat, math.degrees(a), r))
                for a, r in zip(angles, radii, strict=True)
            ]
            ring.append(ring[0])
            shape = PolygonShape({"type": "Polygon", "coordinates": [ring]})
            fences.append(PolygonFence(f"p{i}", "s", shape))
        elif kind == 1:
            outer, hole = square(lon, lat, 60.0), square(lon, lat, 25.0)[::-1]
            shape = PolygonShape({"type": "Polygon", "coordinates": [outer, hole]})
            fences.append(PolygonFence(f"h{i}", "s", shape))
        else:
            fences.append(fence(f"c{i}", lon, lat, float(rng.uniform(10, 90))))
    return fences


@pytest.mark.parametrize(
    ("seed", "crowd", "circles"), [(1, 0, True), (2, 0, True), (3, 0, False), (4, 40, True)]
)
def test_candidates_and_their_depths_agree_with_exact_signed_distances(
    seed: int, crowd: int, circles: bool
) -> None:
    """Walks (runs of consecutive fixes searched by their box), scattered fixes and runs among
    more fences than a run may meet (searched one by one), against every pair's exact signed
    distance; among circles and polygons, and among polygons only."""
    rng = np.random.default_rng(seed)
    crowded = [fence(f"k{i}", 13.4, 52.5, 20.0 + i) for i in range(crowd)]
    fences = irregular_fences(rng, 30)
    if not circles:
        fences = [f for f in fences if isinstance(f, PolygonFence)]
    index = FenceIndex(fences + crowded)
    walk = 13.4 + np.cumsum(rng.normal(0, 2e-5, 300)), 52.5 + np.cumsum(rng.normal(0, 2e-5, 300))
    scattered = rng.uniform(13.395, 13.405, 200), rng.uniform(52.497, 52.503, 200)
    lons = np.concatenate((walk[0], scattered[0], [120.0, -60.0]))
    lats = np.concatenate((walk[1], scattered[1], [10.0, -30.0]))
    depths = rng.uniform(0.0, 20.0, lons.size)
    depths[::7] = 0.0

    point_idx, fence_idx, deep = index.candidates(lons, lats, depths)

    all_p = np.repeat(np.arange(lons.size), len(index))
    all_f = np.tile(np.arange(len(index)), lons.size)
    signed = index.signed_distances(lons[all_p], lats[all_p], all_f)
    inside = np.flatnonzero(signed <= 0.0)
    assert list(zip(point_idx.tolist(), fence_idx.tolist(), strict=True)) == list(
        zip(all_p[inside].tolist(), all_f[inside].tolist(), strict=True)
    )
    assert inside.size > 20  # the walk and the scatter do meet fences
    expected = signed[inside] + depths[all_p[inside]] <= 0.0
    assert deep.tolist() == expected.tolist()
    assert 0 < int(deep.sum()) < deep.size


@pytest.mark.parametrize(("seed", "circles"), [(1, True), (2, True), (3, False)])
def test_farther_than_agrees_with_exact_signed_distances(seed: int, circles: bool) -> None:
    rng = np.random.default_rng(seed)
    fences = irregular_fences(rng, 12)
    index = FenceIndex([f for f in fences if circles or isinstance(f, PolygonFence)])
    n = 3_000
    f = rng.integers(0, len(index), n)
    lon0, lat0 = index.anchors
    bearing, reach = rng.uniform(0, 360, n), rng.uniform(0, 160, n)
    points = [
        destination(float(lon0[i]), float(lat0[i]), float(b), float(r))
        for i, b, r in zip(f, bearing, reach, strict=True)
    ]
    lons, lats = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    limits = rng.uniform(0.0, 40.0, n)

    far = index.farther_than(lons, lats, f, limits)

    expected = index.signed_distances(lons, lats, f) > limits
    assert far.tolist() == expected.tolist()
    assert 0 < int(far.sum()) < n


def test_an_invalid_polygon_cannot_be_built_into_a_fence() -> None:
    with pytest.raises(InvalidFence, match="not closed"):
        PolygonShape({"type": "Polygon", "coordinates": [square(13.4, 52.5, 50.0)[:-1]]})


# --- FixBatch -------------------------------------------------------------------------------


def test_a_fix_batch_holds_columns_with_nan_for_absent_values_and_gives_fixes_back() -> None:
    fixes = [
        Fix("d1", 13.4, 52.5, T0, 12.0, 3.5, 270.0, mock=True, ping_id="p1"),
        Fix("d2", -2.9, 53.4, T0 + timedelta(seconds=7)),
    ]

    batch = FixBatch.of(fixes)

    assert len(batch) == 2
    assert batch.device_ids == ["d1", "d2"]
    assert batch.t.tolist() == [T0.timestamp(), T0.timestamp() + 7]
    assert batch.accuracy[0] == 12.0 and math.isnan(batch.accuracy[1])
    assert math.isnan(batch.speed[1]) and math.isnan(batch.heading[1])
    assert batch.mock.tolist() == [True, False]
    assert batch.ping_ids == ["p1", None]
    assert [batch.fix(i) for i in range(2)] == fixes


def test_a_fix_batch_without_any_ping_id_keeps_none() -> None:
    assert FixBatch.of([Fix("d1", 0.0, 0.0, T0)]).ping_ids is None
    assert len(FixBatch.of([])) == 0


# --- small numeric helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spread_deg", "start_lon"),
    [(1e-4, 13.4), (1e-4, 179.9999), (0.5, 13.4), (0.5, 179.8), (40.0, -170.0)],
)
def test_step_lengths_equal_the_great_circle_distance_of_each_step(
    spread_deg: float, start_lon: float
) -> None:
    """Short steps (the series sine) and long ones (np.sin), across the antimeridian too."""
    rng = np.random.default_rng(5)
    lons = start_lon + np.cumsum(rng.normal(0, spread_deg, 400))
    lats = np.clip(52.5 + np.cumsum(rng.normal(0, spread_deg, 400)), -89.0, 89.0)
    lons = (lons + 180.0) % 360.0 - 180.0  # as fixes report them

    found = step_lengths_m(lons, lats)

    expected = haversine_m(lons[:-1], lats[:-1], lons[1:], lats[1:])
    np.testing.assert_allclose(found, expected, rtol=1e-12, atol=1e-9)


def test_wrap_lon_delta_folds_only_what_crosses_the_antimeridian() -> None:
    small = np.array([-179.5, -1e-12, 0.0, 3.25, 179.5])
    assert wrap_lon_delta(small).tolist() == small.tolist()  # exact, not shifted and back
    folded = wrap_lon_delta(np.array([359.0, -359.0, 180.0, -180.0, 0.5]))
    np.testing.assert_allclose(folded, [-1.0, 1.0, -180.0, -180.0, 0.5], atol=1e-12)
    assert float(wrap_lon_delta(np.float64(200.0))) == pytest.approx(-160.0)
    assert wrap_lon_delta(np.array([])).size == 0


def test_dwell_thresholds_are_a_fences_own_else_the_default_else_none() -> None:
    own = CircleFence("a", "s1", 13.4, 52.5, 50.0, dwell_s=90)
    plain = fence("b")
    index = FenceIndex([own, plain])
    assert index.dwell_thresholds(np.array([0, 1, 1]), 300.0).tolist() == [90.0, 300.0, 300.0]
    assert index.dwell_thresholds(np.array([1, 0]), None).tolist() == [math.inf, 90.0]


def test_the_index_keeps_fences_near_each_other_near_each_other_whatever_the_input_order() -> None:
    """Fences are laid out in Z order of their anchors: the same index from any input order,
    lookups by id still right, and two towns' fences in two runs of positions."""
    rng = np.random.default_rng(3)
    towns = [(13.4, 52.5), (-73.98, 40.75)]
    fences = [
        fence(f"t{t}-{i}", lon + rng.uniform(-0.01, 0.01), lat + rng.uniform(-0.01, 0.01), 30.0)
        for t, (lon, lat) in enumerate(towns)
        for i in range(50)
    ]
    shuffled = [fences[i] for i in rng.permutation(len(fences)).tolist()]

    index, again = FenceIndex(fences), FenceIndex(shuffled)

    assert [f.fence_id for f in index.fences] == [f.fence_id for f in again.fences]
    assert all(index.fences[index.position[f.fence_id]] is f for f in fences)
    towns_in_order = [f.fence_id.split("-")[0] for f in index.fences]
    assert sum(a != b for a, b in itertools.pairwise(towns_in_order)) == 1
    lons = np.array([f.lon for f in fences])
    lats = np.array([f.lat for f in fences])
    assert [[f.fence_id for f in found] for found in index.match(lons, lats)] == [
        [f.fence_id for f in found] for found in again.match(lons, lats)
    ]
