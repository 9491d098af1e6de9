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
from numpy.typing import NDArray

from geo.domain import FenceIndex, FixBatch, step_lengths_m
from geo.geometry import METRES_PER_DEGREE, FloatArray, east_scale, to_local


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
    average_over_s: float = 600.0  # ETAs use the average speed over this much recent history
    min_history_s: float = 60.0  # ... once there is at least this much of it
    stop_allowance_s: float = 20.0  # ... counting each stop in it up to this long
    min_eta_s: float = 90.0  # a nearer arrival is not announced: one stop is a large part of it

    def __post_init__(self) -> None:
        # a corridor has a length and a width where it starts (geo.prediction._polygon_along)
        if self.horizon_s <= 0 or self.min_speed_mps <= 0 or self.base_width_m <= 0:
            raise ValueError("horizon_s, min_speed_mps and base_width_m must be positive")


@dataclass(slots=True)  # not frozen: frozen dataclasses cost 4x to build
class Reported:
    """What the phone reported with its last used fix (``geo.domain.Fix`` has the same)."""

    accuracy_m: float | None
    speed_mps: float | None
    heading_deg: float | None

    @classmethod
    def of(cls, batch: FixBatch, i: int) -> Reported:
        values = (float(batch.accuracy[i]), float(batch.speed[i]), float(batch.heading[i]))
        return cls(*(None if math.isnan(v) else v for v in values))


@dataclass(frozen=True, slots=True)
class Travel:
    """Between consecutive used fixes of a device (from its last one before the batch)."""

    metres: FloatArray
    seconds: FloatArray


@dataclass(slots=True)  # not frozen: frozen dataclasses cost 4x to build
class Motion:
    device_id: str
    lon: float
    lat: float
    t: float
    speed_mps: float
    heading_deg: float  # clockwise from north
    sigma_deg: float
    accuracy_m: float
    eta_speed_mps: float  # recent average speed (each stop counted up to an allowance)
    fast_speed_mps: float  # ... while moving only: the early end of the ETA band
    slow_speed_mps: float  # ... every stop counted in full: the late end


@dataclass(slots=True)  # not frozen: frozen dataclasses cost 4x to build
class Approach:
    device_id: str
    fence_idx: int
    eta_s: float
    distance_m: float
    earliest_s: float  # the ETA band: moving all the way ...
    latest_s: float  # ... or stopping as often and as long as lately


def _bearing_deg(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def _metres_between(lon0: float, lat0: float, lon: float, lat: float) -> float:
    """|``to_local``| of one point in the frame anchored at (lon0, lat0), in plain floats
    (numpy's cosine, so the same value as the array code to the last bit)."""
    dx = lon - lon0
    if not -180.0 < dx < 180.0:
        dx = (dx + 180.0) % 360.0 - 180.0
    x = dx * float(east_scale(lat0))
    return math.hypot(x, (lat - lat0) * METRES_PER_DEGREE)


def motion_of(
    device_id: str, record: Mapping[str, Any], last: Reported | None, rules: PredictionRules
) -> Motion | None:
    """The device's motion from its last used fix: reported speed and heading when both are
    there, otherwise derived from its last two used positions. None when stationary or unsure."""
    position = record.get("p")
    if position is None:
        return None
    lon, lat, t = position
    accuracy = (last.accuracy_m or 0.0) if last is not None else 0.0
    if last is not None and last.speed_mps is not None and last.heading_deg is not None:
        speed, heading, sigma = (
            last.speed_mps,
            last.heading_deg % 360.0,
            rules.reported_heading_sigma_deg,
        )
    else:
        previous = record.get("q")
        if previous is None or not 0 < t - previous[2] <= rules.max_track_age_s:
            return None
        moved = _metres_between(previous[0], previous[1], lon, lat)
        if moved < rules.min_track_m:
            return None
        speed = moved / (t - previous[2])
        heading = _bearing_deg(previous[0], previous[1], lon, lat)
        # Two positions, each off by about ``accuracy``, leave the direction this uncertain.
        sigma = math.degrees(math.atan2(math.sqrt(2) * accuracy, moved)) + 5.0
    if (
        not rules.min_speed_mps <= speed <= rules.max_speed_mps
        or sigma > rules.max_heading_sigma_deg
    ):
        return None
    eta_speed = fast = slow = speed  # too little history: the speed of the moment
    history = record.get("hist", [])
    if history and "eff" in record and t - history[0][0] >= rules.min_history_s:
        first = history[0]
        travelled = float(record["odo"]) - first[1]
        floor = rules.min_speed_mps
        eta_speed = max(travelled / max(float(record["eff"]) - first[2], 1.0), floor)
        fast = max(travelled / max(float(record["mv"]) - first[3], 1.0), eta_speed)
        slow = max(min(travelled / (t - first[0]), eta_speed), floor / 2)
    return Motion(device_id, lon, lat, t, speed, heading, sigma, accuracy, eta_speed, fast, slow)


# Corridor corners, along the heading (u, as a share of the length) and across it (v, as the
# half-width at the start or at the end): (0,-w0) (L,-w1) (L,w1) (0,w0).
_ALONG = np.array([0.0, 1.0, 1.0, 0.0])
_ACROSS_START = np.array([-1.0, 0.0, 0.0, 1.0])
_ACROSS_END = np.array([0.0, -1.0, 1.0, 0.0])
_FEW_MOTIONS = 8  # up to this many corridors are laid out in plain floats, not arrays
_MIN_SCALE = 1e-3  # of the projective map in _polygon_along: below it, clip first


# Columns of the corridor table (one row per motion, see _corridors).
_CORNERS, _LENGTH, _W0, _W1, _SIN, _COS = slice(0, 8), 8, 9, 10, 11, 12
_BOX, _LON, _LAT, _SPEEDS = slice(13, 17), 17, 18, slice(19, 22)


def _corridors(motions: Sequence[Motion], rules: PredictionRules) -> FloatArray:
    """One row per motion: its corridor's four corners (lon, lat), length and half-widths at
    the start and the end (metres), the heading's sine and cosine, the corridor's bounding box
    (lon, lat), the device's position and its three ETA speeds (see the column names above). A
    few rows are laid out in plain floats, more as arrays (the same arithmetic)."""
    if len(motions) <= _FEW_MOTIONS:
        return np.array([_corridor_row(m, rules) for m in motions], dtype=np.float64)
    return _corridor_arrays(motions, rules)


def _corridor_row(m: Motion, rules: PredictionRules) -> tuple[float, ...]:
    length = m.speed_mps * rules.horizon_s
    w0 = rules.base_width_m + m.accuracy_m
    w1 = w0 + length * math.tan(math.radians(m.sigma_deg))
    theta = math.radians(m.heading_deg)
    sin, cos = math.sin(theta), math.cos(theta)
    east, north = math.cos(math.radians(m.lat)) * METRES_PER_DEGREE, METRES_PER_DEGREE
    x0, y0, x1, y1 = w0 * cos, -w0 * sin, length * sin, length * cos
    dx1, dy1 = w1 * cos, -w1 * sin
    lons = (
        m.lon - x0 / east,
        m.lon + (x1 - dx1) / east,
        m.lon + (x1 + dx1) / east,
        m.lon + x0 / east,
    )
    lats = (
        m.lat - y0 / north,
        m.lat + (y1 - dy1) / north,
        m.lat + (y1 + dy1) / north,
        m.lat + y0 / north,
    )
    return (
        *(c for corner in zip(lons, lats, strict=True) for c in corner),
        length,
        w0,
        w1,
        sin,
        cos,
        min(lons),
        min(lats),
        max(lons),
        max(lats),
        m.lon,
        m.lat,
        m.eta_speed_mps,
        m.fast_speed_mps,
        m.slow_speed_mps,
    )


def _corridor_arrays(motions: Sequence[Motion], rules: PredictionRules) -> FloatArray:
    columns = np.array(
        [
            (
                m.lon,
                m.lat,
                m.heading_deg,
                m.speed_mps,
                m.accuracy_m,
                m.sigma_deg,
                m.eta_speed_mps,
                m.fast_speed_mps,
                m.slow_speed_mps,
            )
            for m in motions
        ],
        dtype=np.float64,
    ).reshape(-1, 9)
    lon0, lat0 = columns[:, 0:1], columns[:, 1:2]
    theta = np.radians(columns[:, 2:3])
    length = columns[:, 3] * rules.horizon_s
    w0 = rules.base_width_m + columns[:, 4]
    w1 = w0 + length * np.tan(np.radians(columns[:, 5]))
    u = length[:, None] * _ALONG
    v = w0[:, None] * _ACROSS_START + w1[:, None] * _ACROSS_END
    sin, cos = np.sin(theta), np.cos(theta)
    x, y = u * sin + v * cos, u * cos - v * sin
    lons = lon0 + x / (np.cos(np.radians(lat0)) * METRES_PER_DEGREE)
    lats = lat0 + y / METRES_PER_DEGREE
    table = np.empty((len(columns), 22))
    table[:, 0:8:2], table[:, 1:8:2] = lons, lats
    table[:, _LENGTH], table[:, _W0], table[:, _W1] = length, w0, w1
    table[:, _SIN], table[:, _COS] = sin[:, 0], cos[:, 0]
    table[:, _BOX] = np.column_stack(
        (lons.min(axis=1), lats.min(axis=1), lons.max(axis=1), lats.max(axis=1))
    )
    table[:, _LON], table[:, _LAT], table[:, _SPEEDS] = lon0[:, 0], lat0[:, 0], columns[:, 6:9]
    return table


def _polygon_along(
    shapes: Any,
    dx: Any,
    dy: Any,
    sin: Any,
    cos: Any,
    length: Any,
    w0: Any,
    w1: Any,
) -> Any:
    """For each (corridor, polygon) pair in the polygon's own frame: how far along the corridor
    the polygon begins (nan if they do not meet).

    ``dx, dy``: the device; ``sin, cos``: its heading; the corridor spans u in [0, length] along
    it, |v| <= w0 + (w1 - w0) * u / length across. With a = u / length, b = v / w1 and
    g = (w1 - w0) / w0, the projective map (a, b) -> (a, b) * (1 + g) / (1 + g * a) takes the
    corridor to the rectangle [0, 1] x [-1, 1], takes straight edges to straight edges where
    1 + g * a > 0, and keeps the order along the corridor. So each polygon is mapped, clipped
    to that rectangle by GEOS, and the smallest mapped a of what is left is mapped back. A
    polygon reaching far enough behind the device for 1 + g * a <= 0 is first clipped to the
    corridor's bounding rectangle (a in [0, 1]), where the map is defined.
    """
    xy, owner = shapely.get_coordinates(shapes, return_index=True)
    g = (w1 - w0) / w0
    go = g[owner]
    rx, ry = xy[:, 0] - dx[owner], xy[:, 1] - dy[owner]
    s, c = sin[owner], cos[owner]
    a = (rx * s + ry * c) / length[owner]
    b = (rx * c - ry * s) / w1[owner]
    den = 1.0 + go * a
    framed = np.array(shapes, dtype=np.object_)  # a copy: the index's shapes stay as they are
    if den.min(initial=np.inf) > _MIN_SCALE:
        factor = (1.0 + go) / den
        mapped = np.empty((a.size, 2))
        np.multiply(a, factor, out=mapped[:, 0])
        np.multiply(b, factor, out=mapped[:, 1])
        shapely.set_coordinates(framed, mapped)
    else:  # part of some polygon lies far behind the device: cut to the corridor's box first
        shapely.set_coordinates(framed, np.column_stack((a, b)))
        framed = shapely.clip_by_rect(framed, 0.0, -1.0, 1.0, 1.0)
        counts = shapely.get_num_coordinates(framed)
        go = np.repeat(g, counts)
        ab = shapely.get_coordinates(framed)
        factor = (1.0 + go) / (1.0 + go * ab[:, 0])
        shapely.set_coordinates(framed, ab * factor[:, None])
    first = shapely.bounds(shapely.clip_by_rect(framed, 0.0, -1.0, 1.0, 1.0))[:, 0]
    return first / (1.0 + g - g * first) * length  # nan where nothing is left


def _fold_antimeridian(corridor: Any) -> Any:
    world = shapely.box(-180.0, -90.0, 180.0, 90.0)
    parts = [shapely.intersection(corridor, world)]
    for shift in (-360.0, 360.0):
        moved = shapely.transform(corridor, lambda c, s=shift: c + np.array([s, 0.0]))
        parts.append(shapely.intersection(moved, world))
    return shapely.union_all(parts)


def predict(
    index: FenceIndex,
    motions: Sequence[Motion],
    skip: Sequence[set[str]],
    rules: PredictionRules,
) -> list[Approach]:
    """Fences each motion's corridor reaches within the horizon, with ETA and distance.

    ``skip[i]`` holds fence ids not to predict for ``motions[i]`` (inside, or already announced).
    All pairs are computed at once: circles in closed form, polygons by intersecting each
    corridor with the fence in the fence's own metric frame (shapely, element-wise).
    """
    if not motions or not len(index):
        return []
    table = _corridors(motions, rules)
    corners = table[:, _CORNERS].reshape(-1, 4, 2)
    box = table[:, _BOX]
    if box[:, 0].min() < -180.0 or box[:, 2].max() > 180.0:  # a path over the antimeridian
        corridors = shapely.polygons(corners)
        for i in ((box[:, 0] < -180.0) | (box[:, 2] > 180.0)).nonzero()[0].tolist():
            corridors[i] = _fold_antimeridian(corridors[i])  # the part beyond folded back
        motion_idx, fence_idx = index.tree.query(corridors, predicate="intersects")
    else:  # boxes: whether a polygon meets its corridor is decided exactly below
        motion_idx, fence_idx = index.tree.query(shapely.box(*box.T))
        circle = index.is_circle[fence_idx]
        if circle.any():  # a circle's tree shape is its box: it must meet the corridor itself
            meets = ~circle
            meets[circle] = shapely.intersects(
                shapely.polygons(corners[motion_idx[circle]]),
                index.tree.geometries[fence_idx[circle]],
            )
            motion_idx, fence_idx = motion_idx[meets], fence_idx[meets]
    if motion_idx.size == 0:
        return []
    if any(skip):  # as (motion, fence position) keys, so no fence object is looked at
        count, position = len(index), index.position
        skipped = np.array(
            sorted(
                m * count + position[fence_id]
                for m, ids in enumerate(skip)
                for fence_id in ids
                if fence_id in position
            ),
            dtype=np.int64,
        )
        if skipped.size:
            keys = motion_idx.astype(np.int64) * count + fence_idx
            j = skipped.searchsorted(keys)
            j[j == skipped.size] = skipped.size - 1
            keep = skipped[j] != keys
            motion_idx, fence_idx = motion_idx[keep], fence_idx[keep]
    min_eta = max(rules.min_eta_s, 1e-9)
    along = np.empty(motion_idx.size)
    along.fill(np.nan)
    distance = np.empty(motion_idx.size)
    device = np.empty((motion_idx.size, 2))  # in the polygon's frame, by pair
    circle = index.is_circle[fence_idx]
    polygon = (~circle).nonzero()[0]
    if polygon.size < motion_idx.size:
        lon0, lat0 = index.anchors
        f, rows = fence_idx[circle], table[motion_idx[circle]]
        fx, fy = to_local(lon0[f], lat0[f], rows[:, _LON], rows[:, _LAT])
        r = index.radii[f]
        s, c, span = rows[:, _SIN], rows[:, _COS], rows[:, _LENGTH]
        w0, w1 = rows[:, _W0], rows[:, _W1]
        u = fx * s + fy * c
        v = fx * c - fy * s
        half = w0 + (w1 - w0) * np.clip(u, 0.0, span) / span
        hit = (u + r >= 0) & (u - r <= span) & (np.abs(v) <= r + half)
        chord = np.sqrt(np.clip(r * r - v * v, 0.0, None))
        along[circle] = np.where(hit, np.where(np.abs(v) < r, u - chord, u), np.nan)
        distance[circle] = np.maximum(0.0, np.hypot(fx, fy) - r)
    if polygon.size:
        if polygon.size == motion_idx.size:  # polygons only: no gathering by pair kind
            f, rows = fence_idx, table[motion_idx]
        else:
            f, rows = fence_idx[polygon], table[motion_idx[polygon]]
        dx, dy = index.local_xy(rows[:, _LON], rows[:, _LAT], f)
        device[polygon, 0], device[polygon, 1] = dx, dy
        s, c, span = rows[:, _SIN], rows[:, _COS], rows[:, _LENGTH]
        # Before GEOS: the disk around the anchor holding the whole polygon must meet the
        # rectangle around the corridor in its own frame (length along the heading, the end
        # width across), and must not lie wholly beyond the slanted side of the corridor on its
        # side (the line |v| = w0 + k * t, k its widening per metre along).
        # u: the device's place along the heading, from the anchor; v: the anchor across it.
        reach, u, v = index.reaches[f], dx * s + dy * c, np.abs(dy * s - dx * c)
        w0, w1 = rows[:, _W0], rows[:, _W1]
        k = (w1 - w0) / span
        near = (
            (u <= reach)
            & (u >= -span - reach)
            & (v <= w1 + reach)
            & (v - w0 + k * u <= reach * np.sqrt(1.0 + k * k))
        ).nonzero()[0]
        rows = rows[near]
        along[polygon[near]] = _polygon_along(
            index.local_shapes[f[near]],
            dx[near],
            dy[near],
            rows[:, _SIN],
            rows[:, _COS],
            rows[:, _LENGTH],
            rows[:, _W0],
            rows[:, _W1],
        )
    eta = np.fmax(along, -1.0) / table[motion_idx, _SPEEDS.start]  # nan (not reached): -1
    found = (eta >= min_eta).nonzero()[0]
    if found.size == 0:
        return []
    far = found[~circle[found]]
    if far.size:  # distances only for what is announced
        distance[far] = shapely.distance(
            index.local_shapes[fence_idx[far]], shapely.points(device[far])
        )
    m = motion_idx[found]
    times = along[found, None] / table[m, _SPEEDS]  # the ETA, the early end, the late end
    return [
        Approach(motions[i].device_id, fence, eta_s, metres, early, late)
        for i, fence, metres, (eta_s, early, late) in zip(
            m.tolist(),
            fence_idx[found].tolist(),
            distance[found].tolist(),
            times.tolist(),
            strict=True,
        )
    ]


def odometer(
    batch: FixBatch,
    used: NDArray[np.intp],
    travel: Travel | None,
    old: Mapping[str, Any],
    new: dict[str, Any],
    rules: PredictionRules,
    max_step_mps: float = math.inf,
) -> None:
    """Distance travelled and clocks for the speeds that ETAs use, with a short history of them.
    A step faster than ``max_step_mps`` (a relocation the jump rule accepted: a flight, a
    train, a phone off for a while) is not counted, distance or time.

    A bus or a shopper stops; the speed of the moment overstates how soon they arrive and the
    plain average over a terminus wait understates it. Three clocks run: ``mv`` counts moving
    time only, ``eff`` moving time plus each stop up to ``stop_allowance_s`` (a typical stop: a
    light, a bus stop), and wall time. ``run`` is how long the current stop has lasted so far.
    """
    if used.size == 0:
        return
    clocks = (
        float(old.get("odo", 0.0)),
        float(old.get("eff", 0.0)),
        float(old.get("mv", 0.0)),
        float(old.get("run", 0.0)),
    )
    previous = old.get("p")
    if travel is None and (previous is not None or used.size > 1):
        lons, lats, times = batch.lon[used], batch.lat[used], batch.t[used]
        if previous is not None:
            lons = np.concatenate(([previous[0]], lons))
            lats = np.concatenate(([previous[1]], lats))
            times = np.concatenate(([previous[2]], times))
        travel = Travel(step_lengths_m(lons, lats), np.diff(times))
        plausible = travel.metres <= max_step_mps * np.maximum(travel.seconds, 1.0)
        if not plausible.all():
            travel = Travel(travel.metres[plausible], travel.seconds[plausible])
    if travel is not None and travel.seconds.size == 1:  # one fix since the last, as phones send
        clocks = _advance_one(clocks, float(travel.metres[0]), float(travel.seconds[0]), rules)
    elif travel is not None and travel.seconds.size:
        clocks = _advance(clocks, travel, rules)
    odo, eff, moving, run = clocks
    t = float(batch.t[used[-1]])
    window = rules.average_over_s
    history = [h for h in old.get("hist", []) if len(h) == 4 and t - h[0] <= window]
    if not history or t - history[-1][0] >= window / 10:
        history.append([t, round(odo, 1), round(eff, 1), round(moving, 1)])
    new["odo"], new["eff"], new["mv"], new["run"] = (
        round(odo, 1),
        round(eff, 1),
        round(moving, 1),
        round(run, 1),
    )
    new["hist"] = history


def _advance(
    clocks: tuple[float, float, float, float], travel: Travel, rules: PredictionRules
) -> tuple[float, float, float, float]:
    """``odometer``'s clocks (odo, eff, mv, run) after the steps of ``travel``."""
    odo, eff, moving, run = clocks
    steps = travel.metres
    dts = np.maximum(travel.seconds, 0.0)
    stopped = steps < rules.min_speed_mps * dts
    odo += float(steps.sum())
    if not stopped.any():
        elapsed = float(dts.sum())
        return odo, eff + elapsed, moving + elapsed, 0.0
    # stopped seconds so far in each stop, a stop ending at a move
    moving += float(dts[~stopped].sum())
    stop_dt = np.where(stopped, dts, 0.0)
    total = np.cumsum(stop_dt) + run
    reset = np.maximum.accumulate(np.where(stopped, -1, np.arange(dts.size)))
    base = np.where(reset >= 0, total[np.maximum(reset, 0)], 0.0)
    after = total - base
    allowance = rules.stop_allowance_s
    counted = np.minimum(after, allowance) - np.minimum(after - stop_dt, allowance)
    eff += float(np.where(stopped, counted, dts).sum())
    return odo, eff, moving, float(after[-1]) if stopped[-1] else 0.0


def _advance_one(
    clocks: tuple[float, float, float, float], metres: float, seconds: float, rules: PredictionRules
) -> tuple[float, float, float, float]:
    """``_advance`` over one step, in plain floats: the operations it does on one-element arrays,
    in the same order, so the same values to the last bit (tests/unit/geo/test_single_fixes.py),
    at a tenth of the cost."""
    odo, eff, moving, run = clocks
    dt = max(seconds, 0.0)
    odo += metres
    if metres < rules.min_speed_mps * dt:  # stopped: counted up to the allowance
        after = dt + run
        allowance = rules.stop_allowance_s
        eff += min(after, allowance) - min(after - dt, allowance)
        return odo, eff, moving, after
    return odo, eff + dt, moving + dt, 0.0
