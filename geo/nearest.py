"""The fences nearest a position, as circles a phone's OS can monitor (pure; no I/O).

iOS monitors at most 20 regions per app and Android at most 100 geofences, and both monitor
circles only. So the app asks for the nearest K fences and registers them: a circle fence as it
is, a polygon as the circle around it (centred on its centroid, reaching its farthest vertex).
The search uses the fence index's STRtree: boxes of growing reach around the position are queried
until K fences lie within the reach (or the reach hits its limit), then exact distances rank them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely

from geo.domain import CircleFence, FenceIndex, PolygonFence
from geo.geometry import METRES_PER_DEGREE

OS_REGION_LIMITS = {"ios": 20, "android": 100, "web": 100}
FIRST_REACH_M = 1_000.0
MAX_REACH_M = 200_000.0


@dataclass(frozen=True, slots=True)
class NearFence:
    fence_id: str
    store_id: str
    kind: str  # circle | polygon
    lon: float  # the monitoring circle's centre
    lat: float
    radius_m: float  # the monitoring circle's radius (a polygon's enclosing circle)
    distance_m: float  # from the position to the fence's edge; 0 inside


def monitoring_circle(fence: CircleFence | PolygonFence) -> tuple[float, float, float]:
    """(lon, lat, radius_m) of the smallest centred circle an OS can monitor for this fence."""
    if isinstance(fence, CircleFence):
        return fence.lon, fence.lat, fence.radius_m
    coords = shapely.get_coordinates(fence.shape.local)
    reach = float(np.max(np.hypot(coords[:, 0], coords[:, 1]))) if len(coords) else 1.0
    lon, lat = fence.shape.anchor
    return lon, lat, max(1.0, math.ceil(reach))


def _box(lon: float, lat: float, reach_m: float) -> shapely.Geometry:
    dlat = reach_m / METRES_PER_DEGREE
    south, north = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    coslat = math.cos(math.radians(min(89.9, max(abs(south), abs(north)))))
    dlon = min(180.0, reach_m / (METRES_PER_DEGREE * coslat))
    west, east = lon - dlon, lon + dlon
    boxes = [shapely.box(max(-180.0, west), south, min(180.0, east), north)]
    if west < -180.0:
        boxes.append(shapely.box(west + 360.0, south, 180.0, north))
    if east > 180.0:
        boxes.append(shapely.box(-180.0, south, east - 360.0, north))
    return shapely.union_all(boxes)


def nearest_fences(
    index: FenceIndex,
    lon: float,
    lat: float,
    k: int,
    *,
    max_reach_m: float = MAX_REACH_M,
) -> list[NearFence]:
    """The ``k`` fences nearest (lon, lat) within ``max_reach_m``, nearest first."""
    if k <= 0 or len(index) == 0:
        return []
    reach = FIRST_REACH_M
    while True:
        hits = np.unique(index.tree.query(_box(lon, lat, reach), predicate="intersects"))
        if hits.size:
            lons = np.full(hits.size, lon, dtype=np.float64)
            lats = np.full(hits.size, lat, dtype=np.float64)
            distance = np.maximum(index.signed_distances(lons, lats, hits.astype(np.intp)), 0.0)
            within = distance <= reach
            if within.sum() >= k or reach >= max_reach_m:
                order = np.lexsort((hits, distance))
                chosen = [i for i in order.tolist() if distance[i] <= min(reach, max_reach_m)]
                return [_near(index, int(hits[i]), float(distance[i])) for i in chosen[:k]]
        elif reach >= max_reach_m:
            return []
        reach = min(reach * 4.0, max_reach_m)


def _near(index: FenceIndex, position: int, distance: float) -> NearFence:
    fence = index.fences[position]
    c_lon, c_lat, radius = monitoring_circle(fence)
    kind = "circle" if isinstance(fence, CircleFence) else "polygon"
    return NearFence(fence.fence_id, fence.store_id, kind, c_lon, c_lat, radius, round(distance, 1))
