"""Fence geometry: GeoJSON polygons validated with clear messages, circles, local metric frames.

Every distance is in metres. Each fence has an anchor (lon0, lat0); around it a local
equirectangular frame (x east, y north, metres) is exact to well under a metre at store scale
(< 50 km), which is where signed distances to a polygon's edge are measured.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon

from core.errors import InvalidInput

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180.0
MAX_FENCE_SPAN_M = 50_000.0
MIN_FENCE_AREA_M2 = 1.0

FloatArray = NDArray[np.float64]


class InvalidFence(InvalidInput):
    code = "invalid_fence"


def wrap_lon_delta(delta: FloatArray) -> FloatArray:
    """Longitude differences folded into [-180, 180)."""
    if np.ndim(delta) and np.abs(delta).max(initial=0.0) < 180.0:
        return delta  # nothing to fold (the usual case; the remainder is a costly operation)
    folded: FloatArray = (delta + 180.0) % 360.0 - 180.0
    return folded


def points_xy(x: FloatArray, y: FloatArray) -> NDArray[np.object_]:
    """``shapely.points(x, y)`` for two equal-length 1-D arrays, without broadcasting them."""
    coords = np.empty((x.size, 2), dtype=np.float64)
    coords[:, 0] = x
    coords[:, 1] = y
    points: NDArray[np.object_] = shapely.points(coords)
    return points


def east_scale(lat0: FloatArray | float) -> Any:
    """Metres per degree of longitude at latitude ``lat0`` (the local frame's x scale)."""
    return np.cos(np.radians(lat0)) * METRES_PER_DEGREE


def to_local(
    lons: FloatArray,
    lats: FloatArray,
    lon0: FloatArray | float,
    lat0: FloatArray | float,
    x_scale: FloatArray | float | None = None,
) -> tuple[FloatArray, FloatArray]:
    """(lon, lat) -> metres east/north of the anchor, element-wise; wraps the antimeridian.
    ``x_scale``: ``east_scale(lat0)``, when the caller has it already."""
    scale = east_scale(lat0) if x_scale is None else x_scale
    x: FloatArray = wrap_lon_delta(np.asarray(lons) - lon0) * scale
    y: FloatArray = (np.asarray(lats) - lat0) * METRES_PER_DEGREE
    return x, y


def _ring_problems(ring: Any, where: str) -> list[Any]:
    if not isinstance(ring, list) or not all(isinstance(p, list | tuple) for p in ring):
        raise InvalidFence(f"{where} must be a list of [lon, lat] positions")
    if len(ring) < 4:
        raise InvalidFence(f"{where} has {len(ring)} positions; a closed ring needs at least 4")
    for position in ring:
        if len(position) < 2 or not all(isinstance(v, int | float) for v in position[:2]):
            raise InvalidFence(f"{where} has a position that is not [lon, lat]: {position!r}")
        lon, lat = float(position[0]), float(position[1])
        if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lon) > 180 or abs(lat) > 90:
            raise InvalidFence(
                f"{where} has position [{lon}, {lat}] outside lon [-180, 180] / lat [-90, 90]"
            )
    if list(ring[0][:2]) != list(ring[-1][:2]):
        raise InvalidFence(f"{where} is not closed: its first and last positions differ")
    return [(float(p[0]), float(p[1])) for p in ring]


def _crosses_antimeridian(rings: Sequence[Sequence[tuple[float, float]]]) -> bool:
    return any(abs(b[0] - a[0]) > 180.0 for ring in rings for a, b in itertools.pairwise(ring))


def _polygons_from_geojson(geojson: Any) -> list[list[list[tuple[float, float]]]]:
    if not isinstance(geojson, dict) or "type" not in geojson:
        raise InvalidFence("geometry must be a GeoJSON object with 'type' and 'coordinates'")
    kind, coordinates = geojson.get("type"), geojson.get("coordinates")
    if kind == "Polygon":
        polygons = [coordinates]
    elif kind == "MultiPolygon":
        if not isinstance(coordinates, list) or not coordinates:
            raise InvalidFence("MultiPolygon coordinates must be a non-empty list of polygons")
        polygons = coordinates
    else:
        raise InvalidFence(
            f"geometry type {kind!r} is not a fence; use Polygon or MultiPolygon, or a circle"
        )
    result = []
    for i, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not polygon:
            raise InvalidFence(f"polygon {i} must be a non-empty list of linear rings")
        result.append(
            [_ring_problems(r, f"ring {j} of polygon {i}") for j, r in enumerate(polygon)]
        )
    return result


def _unwrap(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(lon + 360.0 if lon < 0 else lon, lat) for lon, lat in ring]


def _split_at_antimeridian(geometry: shapely.Geometry) -> shapely.Geometry:
    """A geometry in unwrapped longitudes (0..360) -> the same area in [-180, 180] parts."""
    east = shapely.intersection(geometry, shapely.box(-180.0, -90.0, 180.0, 90.0))
    beyond = shapely.intersection(geometry, shapely.box(180.0, -90.0, 540.0, 90.0))
    return shapely.union(east, _translate(beyond, -360.0))


def _translate(geometry: shapely.Geometry, dx: float) -> shapely.Geometry:
    return shapely.transform(geometry, lambda c: c + np.array([dx, 0.0]))


class PolygonShape:
    """A validated polygon fence: lon/lat geometry (split at ±180 if needed) and its local form."""

    __slots__ = ("anchor", "geojson", "local", "lonlat")

    def __init__(self, geojson: Any) -> None:
        polygons = _polygons_from_geojson(geojson)
        all_rings = [ring for polygon in polygons for ring in polygon]
        lons = [lon for ring in all_rings for lon, _ in ring]
        # A ring jumping over ±180, or parts on both sides of it (the RFC 7946 split form):
        # work in unwrapped longitudes (0..360) where the fence is one compact shape.
        crosses = _crosses_antimeridian(all_rings) or max(lons) - min(lons) > 180.0
        if crosses:
            polygons = [[_unwrap(r) for r in polygon] for polygon in polygons]
        parts = []
        for i, rings in enumerate(polygons):
            polygon = Polygon(rings[0], rings[1:])
            if not polygon.is_valid:
                reason = shapely.is_valid_reason(polygon)
                raise InvalidFence(f"polygon {i} is invalid: {reason}")
            parts.append(polygon)
        geometry = parts[0] if len(parts) == 1 else MultiPolygon(parts)
        if crosses and len(parts) > 1:  # halves cut at ±180 meet again along that meridian
            geometry = shapely.union_all(parts)
        if not geometry.is_valid:
            raise InvalidFence(
                f"polygons overlap or touch badly: {shapely.is_valid_reason(geometry)}"
            )
        centroid = geometry.centroid
        lon0, lat0 = float(centroid.x), float(centroid.y)
        coslat0 = math.cos(math.radians(lat0))
        local = shapely.transform(
            geometry,
            lambda c: np.column_stack(
                (
                    (c[:, 0] - lon0) * coslat0 * METRES_PER_DEGREE,
                    (c[:, 1] - lat0) * METRES_PER_DEGREE,
                )
            ),
        )
        minx, miny, maxx, maxy = local.bounds
        span = math.hypot(maxx - minx, maxy - miny)
        if span > MAX_FENCE_SPAN_M:
            raise InvalidFence(
                f"fence spans {span / 1000:.1f} km; the largest supported is "
                f"{MAX_FENCE_SPAN_M / 1000:.0f} km"
            )
        if local.area < MIN_FENCE_AREA_M2:
            raise InvalidFence(f"fence area is {local.area:.2f} m²; it must enclose at least 1 m²")
        self.lonlat = _split_at_antimeridian(geometry) if crosses else geometry
        self.anchor = (((lon0 + 180.0) % 360.0) - 180.0, lat0)
        self.local = local
        self.geojson = geojson
