"""Pass-by prediction: from speed and heading, which fences will the device reach, and when.

The path ahead is projected over a horizon as a corridor that widens with the heading's
uncertainty (a trapezoid in the device's local metric frame). Corridors of a whole batch are
queried against the fence tree at once; exact along-track distances then give each ETA.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from geo.domain import CircleFence, FenceIndex, Fix
from geo.geometry import METRES_PER_DEGREE, to_local


@dataclass(frozen=True, slots=True)
class PredictionRules:
    horizon_s: float = 600.0
    min_speed_mps: float = 1.0  # slower than this is stationary: no prediction
    max_speed_mps: float = 70.0
    reported_heading_sigma_deg: float = 15.0
    max_heading_sigma_deg: float = 35.0  # a less certain heading is unreliable: no prediction
    base_width_m: float = 15.0
    min_track_m: float = 10.0  # a derived heading needs at least this much movement
    max_track_age_s: float = 180.0  # ... between fixes no further apart than this
    repeat_after_s: float = 120.0  # an approach is not announced again until ETA + this


@dataclass(frozen=True, slots=True)
class Motion:
    device_id: str
    lon: float
    lat: float
    t: float
    speed_mps: float
    heading_deg: float  # clockwise from north
    sigma_deg: float
    accuracy_m: float


@dataclass(frozen=True, slots=True)
class Approach:
    device_id: str
    fence_idx: int
    eta_s: float
    distance_m: float


def _bearing_deg(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def motion_of(
    device_id: str, record: Mapping[str, Any], last: Fix | None, rules: PredictionRules
) -> Motion | None:
    """The device's motion from its last used fix: reported speed and heading when both are
    there, otherwise derived from its last two used positions. None when stationary or unsure."""
    position = record.get("p")
    if position is None:
        return None
    lon, lat, t = position
    accuracy = (last.accuracy_m or 0.0) if last is not None else 0.0
    if last is not None and last.speed_mps is not None and last.heading_deg is not None:
        speed, heading, sigma = last.speed_mps, last.heading_deg % 360.0, rules.reported_heading_sigma_deg
    else:
        previous = record.get("q")
        if previous is None or not 0 < t - previous[2] <= rules.max_track_age_s:
            return None
        x, y = to_local(np.array([lon]), np.array([lat]), previous[0], previous[1])
        moved = float(math.hypot(x[0], y[0]))
        if moved < rules.min_track_m:
            return None
        speed = moved / (t - previous[2])
        heading = _bearing_deg(previous[0], previous[1], lon, lat)
        # Two positions, each off by about ``accuracy``, leave the direction this uncertain.
        sigma = math.degrees(math.atan2(math.sqrt(2) * accuracy, moved)) + 5.0
    if not rules.min_speed_mps <= speed <= rules.max_speed_mps or sigma > rules.max_heading_sigma_deg:
        return None
    return Motion(device_id, lon, lat, t, speed, heading, sigma, accuracy)


def _corridors(motions: Sequence[Motion], rules: PredictionRules) -> Any:
    n = len(motions)
    lon0 = np.array([m.lon for m in motions])
    lat0 = np.array([m.lat for m in motions])
    theta = np.radians([m.heading_deg for m in motions])
    length = np.array([m.speed_mps for m in motions]) * rules.horizon_s
    w0 = rules.base_width_m + np.array([m.accuracy_m for m in motions])
    w1 = w0 + length * np.tan(np.radians([m.sigma_deg for m in motions]))
    # Corners (along u, across v): (0,-w0) (L,-w1) (L,w1) (0,w0); heading vector (sin, cos).
    u = np.stack([np.zeros(n), length, length, np.zeros(n)], axis=1)
    v = np.stack([-w0, -w1, w1, w0], axis=1)
    sin, cos = np.sin(theta)[:, None], np.cos(theta)[:, None]
    x, y = u * sin + v * cos, u * cos - v * sin
    coslat = np.cos(np.radians(lat0))[:, None]
    lons = lon0[:, None] + x / (coslat * METRES_PER_DEGREE)
    lats = lat0[:, None] + y / METRES_PER_DEGREE
    return shapely.polygons(np.stack([lons, lats], axis=2)), length, w0, w1


def predict(
    index: FenceIndex,
    motions: Sequence[Motion],
    skip: Sequence[set[str]],
    rules: PredictionRules,
) -> list[Approach]:
    """Fences each motion's corridor reaches within the horizon, with ETA and distance.

    ``skip[i]`` holds fence ids not to predict for ``motions[i]`` (inside, or already announced).
    """
    if not motions or not len(index):
        return []
    corridors, length, w0, w1 = _corridors(motions, rules)
    motion_idx, fence_idx = index.tree.query(corridors)
    approaches: list[Approach] = []
    for m_i, f_i in zip(motion_idx.tolist(), fence_idx.tolist(), strict=True):
        motion, fence = motions[m_i], index.fences[f_i]
        if fence.fence_id in skip[m_i]:
            continue
        found = _along_track(motion, fence, index, f_i, float(length[m_i]),
                             float(w0[m_i]), float(w1[m_i]))
        if found is None:
            continue
        along, distance = found
        approaches.append(Approach(motion.device_id, f_i, along / motion.speed_mps, distance))
    return approaches


def _along_track(
    motion: Motion, fence: Any, index: FenceIndex, f_i: int, length: float, w0: float, w1: float
) -> tuple[float, float] | None:
    """(metres along the path to where it first meets the fence, straight-line metres to it)."""
    theta = math.radians(motion.heading_deg)
    sin, cos = math.sin(theta), math.cos(theta)
    if isinstance(fence, CircleFence):
        x, y = to_local(np.array([fence.lon]), np.array([fence.lat]), motion.lon, motion.lat)
        fx, fy, r = float(x[0]), float(y[0]), fence.radius_m
        u, v = fx * sin + fy * cos, fx * cos - fy * sin
        if u + r < 0 or u - r > length:
            return None
        half_width = w0 + (w1 - w0) * min(max(u, 0.0), length) / length
        if abs(v) > r + half_width:
            return None
        along = u - math.sqrt(r * r - v * v) if abs(v) < r else u
        distance = max(0.0, math.hypot(fx, fy) - r)
        return (along, distance) if along > 0 else None
    # Polygon: intersect the corridor and the fence in the device's frame.
    local = shapely.transform(
        fence.shape.lonlat,
        lambda c: np.column_stack(to_local(c[:, 0], c[:, 1], motion.lon, motion.lat)),
    )
    corridor = shapely.polygons([
        (-w0 * cos, w0 * sin),
        (length * sin - w1 * cos, length * cos + w1 * sin),
        (length * sin + w1 * cos, length * cos - w1 * sin),
        (w0 * cos, -w0 * sin),
    ])
    meeting = shapely.intersection(corridor, local)
    if meeting.is_empty:
        return None
    coords = shapely.get_coordinates(meeting)
    along = float(np.min(coords[:, 0] * sin + coords[:, 1] * cos))
    distance = float(shapely.distance(local, shapely.Point(0.0, 0.0)))
    return (along, distance) if along > 0 else None
