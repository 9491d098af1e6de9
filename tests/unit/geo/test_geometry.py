"""Polygon fences (geo/geometry.py PolygonShape) and how the index measures them: validation
messages, holes, MultiPolygons and the antimeridian."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, Polygon, box

from geo.domain import CircleFence, Fence, FenceIndex, PolygonFence
from geo.geometry import METRES_PER_DEGREE, InvalidFence, PolygonShape

LON0, LAT0 = 24.94, 60.17  # Helsinki
PROPERTY = settings(deadline=None, max_examples=80)

Ring = list[list[float]]


# --- builders -------------------------------------------------------------------------------


def lonlat(x: float, y: float, lon0: float = LON0, lat0: float = LAT0) -> list[float]:
    """Metres east/north of (lon0, lat0) -> [lon, lat] (equirectangular, exact enough at 1 km)."""
    return [
        lon0 + x / (METRES_PER_DEGREE * math.cos(math.radians(lat0))),
        lat0 + y / METRES_PER_DEGREE,
    ]


def ring_m(corners: Sequence[tuple[float, float]], lon0: float = LON0, lat0: float = LAT0) -> Ring:
    ring = [lonlat(x, y, lon0, lat0) for x, y in corners]
    return [*ring, ring[0]]


def rect_m(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def polygon(*rings: Ring) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def fence_of(geojson: dict[str, Any], fence_id: str = "p") -> PolygonFence:
    return PolygonFence(fence_id, "s1", PolygonShape(geojson))


def signed(fence: Fence, points: Sequence[Sequence[float]]) -> list[float]:
    index = FenceIndex([fence])
    lons = np.array([p[0] for p in points], dtype=np.float64)
    lats = np.array([p[1] for p in points], dtype=np.float64)
    return index.signed_distances(lons, lats, np.zeros(len(points), dtype=np.intp)).tolist()


def matches(fence: Fence, points: Sequence[Sequence[float]]) -> list[bool]:
    found = FenceIndex([fence]).match([p[0] for p in points], [p[1] for p in points])
    return [bool(f) for f in found]


SQUARE = ring_m(rect_m(-50, -50, 50, 50))


# --- validation messages --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("geojson", "message"),
    [
        (
            polygon(ring_m([(-50, -50), (50, 50), (50, -50), (-50, 50)])),  # a bow tie
            r"polygon 0 is invalid: Self-intersection\[",
        ),
        (polygon(SQUARE[:-1]), "ring 0 of polygon 0 is not closed: its first and last positions"),
        (polygon(SQUARE[:2] + SQUARE[:1]), "has 3 positions; a closed ring needs at least 4"),
        (polygon([]), "ring 0 of polygon 0 has 0 positions"),
        (
            polygon([[24.9, 60.1], [24.91, 60.1], [24.91, 90.5], [24.9, 60.1]]),
            r"position \[24.91, 90.5\] outside lon \[-180, 180\] / lat \[-90, 90\]",
        ),
        (
            polygon([[179.9, 0.0], [180.5, 0.0], [180.5, 0.1], [179.9, 0.0]]),
            r"position \[180.5, 0.0\] outside lon",
        ),
        (
            polygon([[24.9, 60.1], [float("nan"), 60.1], [24.91, 60.11], [24.9, 60.1]]),
            "outside lon",
        ),
        (polygon([[24.9, 60.1], ["x", 60.1], [24.91, 60.11], [24.9, 60.1]]), "not \\[lon, lat\\]"),
        (polygon([[24.9, 60.1], [24.91], [24.91, 60.11], [24.9, 60.1]]), "not \\[lon, lat\\]"),
        (polygon("not a ring"), "ring 0 of polygon 0 must be a list of \\[lon, lat\\] positions"),
        (
            polygon(ring_m(rect_m(0, 0, 40_000, 40_000))),
            r"fence spans 56\.\d km; the largest supported is 50 km",
        ),
        (
            polygon(ring_m(rect_m(0, 0, 0.5, 0.5))),
            r"fence area is 0\.25 m²; it must enclose at least 1 m²",
        ),
        (
            polygon(SQUARE, ring_m(rect_m(100, 100, 120, 120))),
            "polygon 0 is invalid: Hole lies outside shell",
        ),
        (
            {"type": "Point", "coordinates": [LON0, LAT0]},
            "geometry type 'Point' is not a fence; use Polygon or MultiPolygon, or a circle",
        ),
        ({"type": "LineString", "coordinates": SQUARE}, "geometry type 'LineString'"),
        ({"coordinates": [SQUARE]}, "must be a GeoJSON object with 'type' and 'coordinates'"),
        ([SQUARE], "must be a GeoJSON object"),
        ({"type": "Polygon", "coordinates": []}, "polygon 0 must be a non-empty list of linear"),
        (
            {"type": "MultiPolygon", "coordinates": []},
            "MultiPolygon coordinates must be a non-empty",
        ),
        (
            {"type": "MultiPolygon", "coordinates": [[SQUARE], [ring_m(rect_m(0, 0, 80, 80))]]},
            "polygons overlap or touch badly",
        ),
    ],
)
def test_an_invalid_polygon_is_refused_with_a_message_naming_the_problem(
    geojson: Any, message: str
) -> None:
    with pytest.raises(InvalidFence, match=message) as caught:
        PolygonShape(geojson)
    assert caught.value.code == "invalid_fence"


def test_the_second_polygon_of_a_multipolygon_is_named_in_the_message() -> None:
    bad = ring_m(rect_m(200, 0, 300, 100))[:-1]

    with pytest.raises(InvalidFence, match="ring 0 of polygon 1 is not closed"):
        PolygonShape({"type": "MultiPolygon", "coordinates": [[SQUARE], [bad]]})


def test_a_valid_polygon_keeps_its_geojson_and_has_an_anchor_at_its_centre() -> None:
    geojson = polygon(SQUARE)

    shape = PolygonShape(geojson)

    assert shape.geojson is geojson
    assert shape.anchor == pytest.approx((LON0, LAT0), abs=1e-9)
    assert shape.local.area == pytest.approx(100.0 * 100.0, rel=1e-3)


# --- holes ----------------------------------------------------------------------------------

COURTYARD = fence_of(
    polygon(ring_m(rect_m(-100, -100, 100, 100)), ring_m(rect_m(-40, -40, 40, 40)))
)


def test_a_point_in_the_hole_is_outside_with_a_positive_distance_to_the_hole_edge() -> None:
    centre, near_hole_edge = lonlat(0, 0), lonlat(30, 0)

    assert matches(COURTYARD, [centre, near_hole_edge]) == [False, False]
    assert signed(COURTYARD, [centre, near_hole_edge]) == pytest.approx([40.0, 10.0], abs=0.05)


def test_a_point_in_the_ring_is_inside_with_the_distance_to_the_nearest_edge() -> None:
    by_hole, by_outside, middle = lonlat(50, 0), lonlat(90, 0), lonlat(70, 70)

    assert matches(COURTYARD, [by_hole, by_outside, middle]) == [True, True, True]
    assert signed(COURTYARD, [by_hole, by_outside, middle]) == pytest.approx(
        [-10.0, -10.0, -30.0], abs=0.05
    )


def test_a_point_beyond_the_outer_ring_is_outside() -> None:
    assert signed(COURTYARD, [lonlat(0, 130)]) == pytest.approx([30.0], abs=0.05)
    assert matches(COURTYARD, [lonlat(0, 130)]) == [False]


@st.composite
def holed_rectangles(
    draw: st.DrawFn,
) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]]:
    w, h = draw(st.floats(20.0, 2_000.0)), draw(st.floats(20.0, 2_000.0))
    hx0, hx1 = sorted(draw(st.lists(st.floats(2.0, w - 2.0), min_size=2, max_size=2)))
    hy0, hy1 = sorted(draw(st.lists(st.floats(2.0, h - 2.0), min_size=2, max_size=2)))
    assume(hx1 - hx0 > 2.0 and hy1 - hy0 > 2.0)
    return (0.0, 0.0, w, h), (hx0, hy0, hx1, hy1)


@PROPERTY
@given(
    holed_rectangles(),
    st.lists(st.tuples(st.floats(-0.2, 1.2), st.floats(-0.2, 1.2)), min_size=1, max_size=20),
    st.floats(-60.0, 60.0),
)
def test_hole_handling_matches_plane_geometry(
    rects: tuple[tuple[float, float, float, float], tuple[float, float, float, float]],
    fractions: list[tuple[float, float]],
    lat0: float,
) -> None:
    """Inside iff in the outer ring and not in the hole; signed distance as in the plane."""
    outer, hole = rects
    plane = Polygon(rect_m(*outer), [rect_m(*hole)])
    fence = fence_of(polygon(ring_m(rect_m(*outer), LON0, lat0), ring_m(rect_m(*hole), LON0, lat0)))
    points_m = [(fx * outer[2], fy * outer[3]) for fx, fy in fractions]
    # the test's frame and the engine's (anchored at the centroid) differ by ~1e-5 relative
    points_m = [p for p in points_m if plane.boundary.distance(Point(p)) > 0.5]
    assume(points_m)
    points = [lonlat(x, y, LON0, lat0) for x, y in points_m]

    found = signed(fence, points)

    for (x, y), s, m in zip(points_m, found, matches(fence, points), strict=True):
        in_outer = outer[0] < x < outer[2] and outer[1] < y < outer[3]
        in_hole = hole[0] < x < hole[2] and hole[1] < y < hole[3]
        expected = in_outer and not in_hole
        assert m is expected
        assert (s < 0) is expected
        distance = plane.boundary.distance(Point(x, y))
        assert abs(s) == pytest.approx(distance, rel=1e-3, abs=0.05)


# --- MultiPolygon ---------------------------------------------------------------------------

TWIN = fence_of(
    {
        "type": "MultiPolygon",
        "coordinates": [
            [ring_m(rect_m(0, 0, 100, 100))],
            [ring_m(rect_m(300, 0, 400, 100)), ring_m(rect_m(330, 30, 370, 70))],
        ],
    }
)


def test_a_multipolygon_contains_points_in_each_part_and_not_between_them() -> None:
    points = [lonlat(50, 50), lonlat(310, 50), lonlat(200, 50), lonlat(350, 50)]

    assert matches(TWIN, points) == [True, True, False, False]  # the last is in part 2's hole
    assert signed(TWIN, points) == pytest.approx([-50.0, -10.0, 100.0, 20.0], abs=0.05)


def test_a_multipolygon_fence_is_found_by_the_index_among_others() -> None:
    circle = CircleFence("c", "s2", *lonlat(200, 50), radius_m=30.0)
    index = FenceIndex([TWIN, circle])

    found = index.match(*zip(*[lonlat(50, 50), lonlat(200, 50), lonlat(390, 90)], strict=True))

    assert [[f.fence_id for f in r] for r in found] == [["p"], ["c"], ["p"]]


# --- antimeridian ---------------------------------------------------------------------------

STRADDLE = fence_of(
    polygon([[179.99, -0.01], [-179.99, -0.01], [-179.99, 0.01], [179.99, 0.01], [179.99, -0.01]])
)


def test_a_polygon_across_the_antimeridian_contains_points_on_both_sides() -> None:
    inside = [[179.995, 0.0], [-179.995, 0.005], [180.0, 0.0], [-180.0, -0.009]]

    assert matches(STRADDLE, inside) == [True] * 4
    # 0.005 deg of longitude at the equator from the nearest (east or west) side
    assert signed(STRADDLE, inside[:2]) == pytest.approx(
        [-0.005 * METRES_PER_DEGREE, -0.005 * METRES_PER_DEGREE], rel=1e-6
    )


def test_a_polygon_across_the_antimeridian_does_not_contain_points_elsewhere() -> None:
    outside = [[0.0, 0.0], [179.98, 0.0], [-179.98, 0.0], [179.995, 0.02], [-179.995, -0.02]]

    assert matches(STRADDLE, outside) == [False] * 5
    assert signed(STRADDLE, outside[1:3]) == pytest.approx(
        [0.01 * METRES_PER_DEGREE, 0.01 * METRES_PER_DEGREE], rel=1e-6
    )


def test_a_straddling_polygon_is_stored_split_into_parts_within_plus_minus_180() -> None:
    bounds = [p.bounds for p in getattr(STRADDLE.shape.lonlat, "geoms", [STRADDLE.shape.lonlat])]

    assert all(b[0] >= -180.0 and b[2] <= 180.0 for b in bounds)
    assert len(bounds) == 2


def test_a_circle_centred_near_the_antimeridian_matches_a_point_across_it() -> None:
    circle = CircleFence("c", "s1", 179.9995, 0.0, 150.0)

    assert matches(circle, [[-179.9995, 0.0], [-179.998, 0.0], [179.998, 0.0]]) == [
        True,
        False,
        False,
    ]
    assert signed(circle, [[-179.9995, 0.0]]) == pytest.approx(
        [0.001 * METRES_PER_DEGREE - 150.0], abs=0.01
    )


def test_the_rfc7946_split_form_of_a_straddling_fence_is_accepted() -> None:
    east = [[179.99, -0.01], [180.0, -0.01], [180.0, 0.01], [179.99, 0.01], [179.99, -0.01]]
    west = [[-180.0, -0.01], [-179.99, -0.01], [-179.99, 0.01], [-180.0, 0.01], [-180.0, -0.01]]

    fence = fence_of({"type": "MultiPolygon", "coordinates": [[east], [west]]})

    assert matches(fence, [[179.995, 0.0], [-179.995, 0.0], [0.0, 0.0]]) == [True, True, False]


def shift(lon: float, by: float) -> float:
    return (lon + by + 180.0) % 360.0 - 180.0


@st.composite
def shapes_near_lon_zero(draw: st.DrawFn) -> tuple[dict[str, Any], float, float]:
    """A convex polygon (maybe with a square hole) of up to ~2 km straddling or near lon 0."""
    # whole metres and 1e-4 degree steps: near 180 a double keeps ~3e-14 degrees (3 nm), so a
    # shape with nanometre features would not survive the shift, in the test's own arithmetic
    lon0, lat0 = draw(st.integers(-200, 200)) * 1e-4, draw(st.floats(-60.0, 60.0))
    corners = draw(
        st.lists(
            st.tuples(st.integers(-1_000, 1_000), st.integers(-1_000, 1_000)),
            min_size=3,
            max_size=8,
        )
    )
    hull = Polygon(corners).convex_hull
    assume(isinstance(hull, Polygon) and hull.area > 1_000.0)
    rings = [ring_m(list(hull.exterior.coords)[:-1], lon0, lat0)]
    centre = hull.centroid
    hole = box(centre.x - 5, centre.y - 5, centre.x + 5, centre.y + 5)
    if draw(st.booleans()) and hull.buffer(-1.0).contains(hole):
        rings.append(ring_m(list(hole.exterior.coords)[:-1], lon0, lat0))
    return polygon(*rings), lon0, lat0


def moved(geojson: dict[str, Any], how: Any) -> dict[str, Any]:
    return polygon(*[[[how(lon), lat] for lon, lat in ring] for ring in geojson["coordinates"]])


@PROPERTY
@given(
    shapes_near_lon_zero(),
    st.lists(st.tuples(st.floats(-1_500.0, 1_500.0), st.floats(-1_500.0, 1_500.0)), max_size=15),
    st.floats(1.0, 1_000.0),
)
def test_a_fence_across_the_antimeridian_behaves_like_the_same_fence_at_lon_zero(
    shape: tuple[dict[str, Any], float, float],
    offsets: list[tuple[float, float]],
    radius: float,
) -> None:
    """Shift a shape near lon 0 and its points by 180 degrees (onto the antimeridian), or mirror
    that (lon -> -lon): membership and signed distances stay the same."""
    geojson, lon0, lat0 = shape
    points = [lonlat(x, y, lon0, lat0) for x, y in offsets]
    cases: list[tuple[Fence, Fence, Fence]] = [
        (
            fence_of(geojson),
            fence_of(moved(geojson, lambda lon: shift(lon, 180.0))),
            fence_of(moved(geojson, lambda lon: -shift(lon, 180.0))),
        ),
        (
            CircleFence("c", "s", lon0, lat0, radius),
            CircleFence("c", "s", shift(lon0, 180.0), lat0, radius),
            CircleFence("c", "s", -shift(lon0, 180.0), lat0, radius),
        ),
    ]
    shifted = [[shift(lon, 180.0), lat] for lon, lat in points]
    mirrored = [[-lon, lat] for lon, lat in shifted]

    for at_zero, across, mirror in cases:
        expected = signed(at_zero, points)
        assert signed(across, shifted) == pytest.approx(expected, abs=1e-3)
        assert signed(mirror, mirrored) == pytest.approx(expected, abs=1e-3)
        clear = [i for i, s in enumerate(expected) if abs(s) > 1e-3]
        inside = matches(at_zero, points)
        for other, pts in ((across, shifted), (mirror, mirrored)):
            found = matches(other, pts)
            assert [found[i] for i in clear] == [inside[i] for i in clear]
