"""Pure geofence logic: fences, fixes, vectorised matching and presence transitions.

Coordinates are (lon, lat) in EPSG:4326; every distance is in metres. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import shapely
from numpy.typing import NDArray

from core.errors import InvalidInput

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE_LAT = math.pi * EARTH_RADIUS_M / 180.0  # on the same sphere as haversine_m
ENVELOPE_PADDING = 1.01  # envelopes are a coarse filter: never let rounding cut off an edge
MIN_RADIUS_M = 1.0
MAX_RADIUS_M = 50_000.0


class InvalidFence(InvalidInput):
    code = "invalid_fence"


@dataclass(frozen=True, slots=True)
class CircleFence:
    fence_id: str
    store_id: str
    lon: float
    lat: float
    radius_m: float

    def __post_init__(self) -> None:
        validate_circle(self.lon, self.lat, self.radius_m)


def validate_circle(lon: float, lat: float, radius_m: float) -> None:
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise InvalidFence(f"longitude {lon} is outside [-180, 180]")
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise InvalidFence(f"latitude {lat} is outside [-90, 90]")
    if not (math.isfinite(radius_m) and radius_m > 0):
        raise InvalidFence(f"radius {radius_m} m must be a positive number of metres")
    if not MIN_RADIUS_M <= radius_m <= MAX_RADIUS_M:
        raise InvalidFence(
            f"radius {radius_m} m is outside the supported range "
            f"[{MIN_RADIUS_M:g}, {MAX_RADIUS_M:g}] m"
        )


@dataclass(frozen=True, slots=True)
class Fix:
    """One location fix of one device."""

    device_id: str
    lon: float
    lat: float
    recorded_at: datetime
    accuracy_m: float | None = None


def haversine_m(
    lon1: NDArray[np.float64],
    lat1: NDArray[np.float64],
    lon2: NDArray[np.float64],
    lat2: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Great-circle distance in metres, element-wise."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(lon2 - lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    distance: NDArray[np.float64] = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return distance


def _circle_envelope(fence: CircleFence) -> shapely.Geometry:
    """A lon/lat box (two across the antimeridian) that contains the whole circle."""
    reach = fence.radius_m * ENVELOPE_PADDING
    dlat = reach / METRES_PER_DEGREE_LAT
    south, north = max(-90.0, fence.lat - dlat), min(90.0, fence.lat + dlat)
    # The widest parallel the circle touches is the one nearest a pole.
    widest = max(abs(south), abs(north))
    coslat = math.cos(math.radians(widest))
    if widest >= 90.0 or reach >= METRES_PER_DEGREE_LAT * 180.0 * coslat:
        return shapely.box(-180.0, south, 180.0, north)
    dlon = reach / (METRES_PER_DEGREE_LAT * coslat)
    west, east = fence.lon - dlon, fence.lon + dlon
    if west < -180.0:
        return shapely.union(
            shapely.box(-180.0, south, east, north), shapely.box(west + 360.0, south, 180.0, north)
        )
    if east > 180.0:
        return shapely.union(
            shapely.box(west, south, 180.0, north), shapely.box(-180.0, south, east - 360.0, north)
        )
    return shapely.box(west, south, east, north)


class FenceIndex:
    """An immutable snapshot of fences with an STRtree over their envelopes.

    Matching is vectorised: one bulk tree query for all fixes, then an exact distance test on the
    candidate pairs only. A new snapshot is built off the hot path and swapped in whole.
    """

    def __init__(self, fences: Sequence[CircleFence], version: int = 0) -> None:
        self.version = version
        self.fences = tuple(fences)
        self.by_id = {f.fence_id: f for f in self.fences}
        self._tree = shapely.STRtree([_circle_envelope(f) for f in self.fences])
        self._lon = np.array([f.lon for f in self.fences], dtype=np.float64)
        self._lat = np.array([f.lat for f in self.fences], dtype=np.float64)
        self._radius = np.array([f.radius_m for f in self.fences], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.fences)

    def match(self, lons: Sequence[float], lats: Sequence[float]) -> list[list[CircleFence]]:
        """For each point, the fences that contain it (boundary included)."""
        result: list[list[CircleFence]] = [[] for _ in range(len(lons))]
        if not self.fences or not result:
            return result
        points = shapely.points(
            np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64)
        )
        point_idx, fence_idx = self._tree.query(points, predicate="intersects")
        if point_idx.size == 0:
            return result
        plon = np.asarray(lons, dtype=np.float64)[point_idx]
        plat = np.asarray(lats, dtype=np.float64)[point_idx]
        distance = haversine_m(plon, plat, self._lon[fence_idx], self._lat[fence_idx])
        inside = distance <= self._radius[fence_idx]
        for p, f in zip(point_idx[inside].tolist(), fence_idx[inside].tolist(), strict=True):
            result[p].append(self.fences[f])
        return result


@dataclass(frozen=True, slots=True)
class Transition:
    device_id: str
    fence: CircleFence
    kind: str  # "enter" | "exit"
    occurred_at: datetime


def _fix_order(pair: tuple[Fix, list[CircleFence]]) -> tuple[object, ...]:
    fix, matched = pair
    accuracy = math.inf if fix.accuracy_m is None else fix.accuracy_m
    return (fix.recorded_at, accuracy, fix.lon, fix.lat, sorted(f.fence_id for f in matched))


def advance_presence(
    device_id: str,
    record: Mapping[str, object] | None,
    fixes: Sequence[tuple[Fix, list[CircleFence]]],
    fences_by_id: Mapping[str, CircleFence],
    max_accuracy_m: float,
) -> tuple[dict[str, object], list[Transition]]:
    """Fold a device's fixes (in event-time order) into its presence record.

    A fix older than the last one processed changes nothing; a fix less accurate than
    ``max_accuracy_m`` is not used for transitions. Returns the new record and the transitions.
    """
    inside: dict[str, str] = dict(record.get("inside", {})) if record else {}  # type: ignore[call-overload]
    last_raw = record.get("last_fix_at") if record else None
    last = datetime.fromisoformat(str(last_raw)) if last_raw else None
    transitions: list[Transition] = []
    # Event-time order. Of fixes with the same time only the first counts, so ties are broken
    # by accuracy (best first), then by content: a batch's arrival order never changes the result.
    ordered = sorted(fixes, key=_fix_order)
    for fix, matched in ordered:
        if last is not None and fix.recorded_at <= last:
            continue
        last = fix.recorded_at
        if fix.accuracy_m is not None and fix.accuracy_m > max_accuracy_m:
            continue
        now_inside = {f.fence_id: f for f in matched}
        for fence_id, fence in now_inside.items():
            if fence_id not in inside:
                inside[fence_id] = fix.recorded_at.isoformat()
                transitions.append(Transition(device_id, fence, "enter", fix.recorded_at))
        for fence_id in [fid for fid in inside if fid not in now_inside]:
            del inside[fence_id]
            left = fences_by_id.get(fence_id)
            if left is not None:
                transitions.append(Transition(device_id, left, "exit", fix.recorded_at))
    new_record: dict[str, object] = {"inside": inside}
    if last is not None:
        new_record["last_fix_at"] = last.isoformat()
    return new_record, transitions
