"""Nearest fences for on-device monitoring: the tree search returns exactly the k nearest a full
scan would, and polygons become circles that contain them."""

from __future__ import annotations

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.domain import CircleFence, FenceIndex, PolygonFence, haversine_m
from geo.geometry import PolygonShape
from geo.nearest import monitoring_circle, nearest_fences

LON0, LAT0 = 24.94, 60.17


def _scan(index: FenceIndex, lon: float, lat: float) -> list[tuple[float, str]]:
    """Every fence's edge distance by brute force, nearest first."""
    n = len(index)
    signed = index.signed_distances(np.full(n, lon), np.full(n, lat), np.arange(n, dtype=np.intp))
    return sorted(
        (max(0.0, float(d)), f.fence_id) for d, f in zip(signed, index.fences, strict=True)
    )


def _square(fid: str, lon: float, lat: float, half: float) -> PolygonFence:
    ring = [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
        [lon - half, lat - half],
    ]
    return PolygonFence(fid, "s-" + fid, PolygonShape({"type": "Polygon", "coordinates": [ring]}))


@settings(max_examples=60, deadline=None)
@given(
    offsets=st.lists(
        st.tuples(st.floats(-0.3, 0.3), st.floats(-0.15, 0.15), st.floats(5, 400), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    k=st.integers(1, 25),
    at=st.tuples(st.floats(-0.2, 0.2), st.floats(-0.1, 0.1)),
)
def test_tree_search_equals_a_full_scan(
    offsets: list[tuple[float, float, float, bool]], k: int, at: tuple[float, float]
) -> None:
    fences: list[CircleFence | PolygonFence] = []
    for i, (dx, dy, size, polygon) in enumerate(offsets):
        if polygon:
            fences.append(_square(f"f{i}", LON0 + dx, LAT0 + dy, size / 111_000))
        else:
            fences.append(CircleFence(f"f{i}", f"s-f{i}", LON0 + dx, LAT0 + dy, size))
    index = FenceIndex(fences)
    lon, lat = LON0 + at[0], LAT0 + at[1]
    found = nearest_fences(index, lon, lat, k)
    expected = _scan(index, lon, lat)[:k]
    assert len(found) == len(expected)
    assert [f.distance_m for f in found] == [round(d, 1) for d, _ in expected]
    distances = [f.distance_m for f in found]
    assert distances == sorted(distances)


def test_beyond_the_reach_limit_nothing_is_returned() -> None:
    index = FenceIndex([CircleFence("far", "s", LON0 + 5, LAT0, 50)])  # ~280 km east
    assert nearest_fences(index, LON0, LAT0, 5, max_reach_m=100_000) == []
    assert [f.fence_id for f in nearest_fences(index, LON0, LAT0, 5, max_reach_m=400_000)] == [
        "far"
    ]


def test_a_polygon_is_monitored_as_a_circle_that_contains_it() -> None:
    fence = _square("p", LON0, LAT0, 0.001)
    lon, lat, radius = monitoring_circle(fence)
    corners = shapely.get_coordinates(fence.shape.lonlat)
    reach = haversine_m(corners[:, 0], corners[:, 1], lon, lat)
    assert float(reach.max()) <= radius <= float(reach.max()) + 2
    circle = CircleFence("c", "s", LON0, LAT0, 30)
    assert monitoring_circle(circle) == (LON0, LAT0, 30)


def test_fences_across_the_antimeridian_are_found() -> None:
    index = FenceIndex(
        [CircleFence("east", "s", 179.999, 0.0, 50), CircleFence("west", "s", -179.9, 0.0, 50)]
    )
    found = nearest_fences(index, -179.999, 0.0, 2)
    assert [f.fence_id for f in found] == ["east", "west"]
