"""Pure geofence logic: fences, fixes, vectorised matching and presence transitions.

Coordinates are (lon, lat) in EPSG:4326; every distance is in metres. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray

from geo.geometry import (
    EARTH_RADIUS_M,
    METRES_PER_DEGREE,
    FloatArray,
    InvalidFence,
    PolygonShape,
    east_scale,
    points_xy,
    to_local,
)

MIN_RADIUS_M = 1.0
MAX_RADIUS_M = 50_000.0
ENVELOPE_PADDING = 1.01  # envelopes are a coarse filter: never let rounding cut off an edge
# Candidate search walks the tree once per run of this many consecutive fixes (their bounding
# box) rather than once per fix: one device's fixes lie close together, so a run's box meets
# few fences. A run whose box spans more than RUN_SPAN_DEG (lon or lat) or meets more than
# RUN_MAX_FENCES fences falls back to a query per fix, so scattered batches (many devices, a
# jump) or crowded streets never fan out into many pairs; so does a batch shorter than a run.
RUN_LENGTH = 32
RUN_SPAN_DEG = 0.005
RUN_MAX_FENCES = 16


@dataclass(frozen=True, slots=True)
class CircleFence:
    fence_id: str
    store_id: str
    lon: float
    lat: float
    radius_m: float
    dwell_s: int | None = None

    def __post_init__(self) -> None:
        validate_circle(self.lon, self.lat, self.radius_m)

    @property
    def anchor(self) -> tuple[float, float]:
        return self.lon, self.lat


@dataclass(frozen=True, slots=True)
class PolygonFence:
    fence_id: str
    store_id: str
    shape: PolygonShape
    dwell_s: int | None = None

    @property
    def anchor(self) -> tuple[float, float]:
        return self.shape.anchor


Fence = CircleFence | PolygonFence


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
    """One location fix of one device. ``speed_mps``/``heading_deg`` are as reported, if at all."""

    device_id: str
    lon: float
    lat: float
    recorded_at: datetime
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    mock: bool = False
    ping_id: str | None = None


def haversine_m(
    lon1: FloatArray | float,
    lat1: FloatArray | float,
    lon2: FloatArray | float,
    lat2: FloatArray | float,
) -> FloatArray:
    """Great-circle distance in metres, element-wise."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    distance: FloatArray = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return distance


def _half_angle_sine(x: FloatArray) -> FloatArray:
    """sin(x), element-wise. Steps between fixes are small angles: where |x| is below 1e-3 rad
    (about 6 km on the ground), x - x^3/6 equals sin(x) to within 1e-14 of it and costs a
    fraction of ``np.sin``. Each element's value depends on that element alone, so a step's
    length is the same whichever steps it is computed with."""
    result: FloatArray = x - x * x * x * (1.0 / 6.0)
    size = np.abs(x)
    if size.max(initial=0.0) >= 1e-3:
        large = size >= 1e-3
        result[large] = np.sin(x[large])
    return result


def step_lengths_m(lons: FloatArray, lats: FloatArray) -> FloatArray:
    """Great-circle length in metres of each step between consecutive points (one fewer than
    the points): ``haversine_m`` of each pair, with each latitude's cosine computed once."""
    phi = np.radians(lats)
    cos = np.cos(phi)
    half_dphi = _half_angle_sine((phi[1:] - phi[:-1]) * 0.5)
    half_dlmb = _half_angle_sine(np.radians(lons[1:] - lons[:-1]) * 0.5)
    a = half_dphi * half_dphi + cos[:-1] * cos[1:] * (half_dlmb * half_dlmb)
    distance: FloatArray = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
    return distance


def pair_lengths_m(
    lons1: FloatArray, lats1: FloatArray, lons2: FloatArray, lats2: FloatArray
) -> FloatArray:
    """Great-circle length in metres from each point of the first arrays to the same point of
    the second: ``step_lengths_m`` of many separate two-point paths at once (the same
    operations, so the same lengths to the last bit)."""
    phi1, phi2 = np.radians(lats1), np.radians(lats2)
    half_dphi = _half_angle_sine((phi2 - phi1) * 0.5)
    half_dlmb = _half_angle_sine(np.radians(lons2 - lons1) * 0.5)
    a = half_dphi * half_dphi + np.cos(phi1) * np.cos(phi2) * (half_dlmb * half_dlmb)
    distance: FloatArray = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
    return distance


def _box_around(lon: float, lat: float, reach_m: float) -> shapely.Geometry:
    """A lon/lat box (two across the antimeridian) containing every point within ``reach_m``."""
    dlat = reach_m / METRES_PER_DEGREE
    south, north = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    widest = max(abs(south), abs(north))  # the parallel nearest a pole is the widest in degrees
    coslat = math.cos(math.radians(widest))
    if widest >= 90.0 or reach_m >= METRES_PER_DEGREE * 180.0 * coslat:
        return shapely.box(-180.0, south, 180.0, north)
    dlon = reach_m / (METRES_PER_DEGREE * coslat)
    west, east = lon - dlon, lon + dlon
    if west < -180.0:
        return shapely.union(
            shapely.box(-180.0, south, east, north), shapely.box(west + 360.0, south, 180.0, north)
        )
    if east > 180.0:
        return shapely.union(
            shapely.box(west, south, 180.0, north), shapely.box(-180.0, south, east - 360.0, north)
        )
    return shapely.box(west, south, east, north)


def _tree_shape(fence: Fence) -> shapely.Geometry:
    """What the tree holds: a polygon's own lon/lat geometry (containment in lon/lat equals
    containment in the local metric frame, an affine image), a circle's enclosing box."""
    if isinstance(fence, CircleFence):
        return _box_around(fence.lon, fence.lat, fence.radius_m * ENVELOPE_PADDING)
    return fence.shape.lonlat


def _spread_bits(v: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The low 32 bits of each value moved to the even bit positions (for a Morton code)."""
    v = v & np.uint64(0xFFFFFFFF)
    for shift, mask in (
        (16, 0x0000FFFF0000FFFF),
        (8, 0x00FF00FF00FF00FF),
        (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333),
        (1, 0x5555555555555555),
    ):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def _near_to_near(fences: Sequence[Fence]) -> tuple[Fence, ...]:
    """The fences in Z order of their anchors, so fences near each other on the ground sit near
    each other in the index's arrays: a query's candidates then share cache lines."""
    if len(fences) < 2:
        return tuple(fences)
    anchors = np.array([f.anchor for f in fences], dtype=np.float64)
    x = ((anchors[:, 0] + 180.0) * (2**32 / 360.0)).clip(0, 2**32 - 1).astype(np.uint64)
    y = ((anchors[:, 1] + 90.0) * (2**32 / 180.0)).clip(0, 2**32 - 1).astype(np.uint64)
    order = np.argsort(_spread_bits(x) | (_spread_bits(y) << np.uint64(1)), kind="stable")
    return tuple(fences[i] for i in order.tolist())


class FenceIndex:
    """An immutable snapshot of fences with an STRtree over their envelopes.

    Matching is vectorised: one bulk tree query for a whole batch, then exact signed distances
    (metres; negative inside) for the candidate pairs only: great-circle for circles, the local
    metric frame for polygons (prepared geometries). A new snapshot is built off the hot path and
    swapped in whole.
    """

    def __init__(self, fences: Sequence[Fence], version: int = 0) -> None:
        self.version = version
        self.fences: tuple[Fence, ...] = _near_to_near(fences)
        self.by_id = {f.fence_id: f for f in self.fences}
        self.position = {f.fence_id: i for i, f in enumerate(self.fences)}
        tree_shapes = [_tree_shape(f) for f in self.fences]
        self.tree = shapely.STRtree(tree_shapes)
        self._envelopes = shapely.bounds(np.array(tree_shapes, dtype=object)).reshape(-1, 4)
        anchors = np.array([f.anchor for f in self.fences], dtype=np.float64).reshape(-1, 2)
        self._lon0, self._lat0 = anchors[:, 0], anchors[:, 1]
        self._x_scale = east_scale(self._lat0)
        self._dwell = np.array(
            [math.nan if f.dwell_s is None else float(f.dwell_s) for f in self.fences], np.float64
        )
        self._is_circle = np.array([isinstance(f, CircleFence) for f in self.fences], dtype=bool)
        self._radius = np.array(
            [f.radius_m if isinstance(f, CircleFence) else 0.0 for f in self.fences], np.float64
        )
        local = [None if isinstance(f, CircleFence) else f.shape.local for f in self.fences]
        self._local = np.array(local, dtype=object)
        self._boundary = np.array(
            [None if g is None else shapely.boundary(g) for g in local], dtype=object
        )
        shapely.prepare(self._local[~self._is_circle])
        self._lonlat = np.array(
            [None if isinstance(f, CircleFence) else f.shape.lonlat for f in self.fences],
            dtype=object,
        )
        shapely.prepare(self._lonlat[~self._is_circle])
        self._reach = self._radius.copy()  # how far from the anchor any point of the fence is
        polygons = np.flatnonzero(~self._is_circle)
        if polygons.size:
            coords, owner = shapely.get_coordinates(self._local[polygons], return_index=True)
            far = np.zeros(polygons.size)
            np.maximum.at(far, owner, np.hypot(coords[:, 0], coords[:, 1]))
            self._reach[polygons] = far
        # How far from the anchor the fence certainly extends: a disk of this radius around the
        # anchor lies inside it (the anchor's distance to the nearest edge; none when the anchor
        # is outside). With the reach it bounds any point's distance to the edge both ways.
        self._inner = self._radius.copy()
        if polygons.size:
            shapes = self._local[polygons]
            anchor_inside = shapely.contains_xy(shapes, 0.0, 0.0)
            edge = shapely.distance(self._boundary[polygons], shapely.Point(0.0, 0.0))
            self._inner[polygons] = np.where(anchor_inside, edge, -np.inf)

    def __len__(self) -> int:
        return len(self.fences)

    @property
    def anchors(self) -> tuple[FloatArray, FloatArray]:
        return self._lon0, self._lat0

    @property
    def is_circle(self) -> NDArray[np.bool_]:
        return self._is_circle

    @property
    def radii(self) -> FloatArray:
        return self._radius

    @property
    def reaches(self) -> FloatArray:
        """Metres from each fence's anchor to its farthest point (a circle's radius)."""
        return self._reach

    @property
    def local_shapes(self) -> NDArray[np.object_]:
        """Each polygon fence in its own metric frame (None for circles)."""
        return self._local

    def dwell_thresholds(self, fence_idx: NDArray[np.intp], default_s: float | None) -> FloatArray:
        """Each fence's dwell threshold in seconds: its own, else ``default_s``; inf for none."""
        own = self._dwell[fence_idx]
        fallback = math.inf if default_s is None else float(default_s)
        thresholds: FloatArray = np.where(np.isnan(own), fallback, own)
        return thresholds

    def local_xy(
        self, lons: FloatArray, lats: FloatArray, f: NDArray[np.intp]
    ) -> tuple[FloatArray, FloatArray]:
        """Each point in its paired fence's metric frame, metres east and north."""
        return to_local(lons, lats, self._lon0[f], self._lat0[f], self._x_scale[f])

    def signed_distances(
        self, lons: FloatArray, lats: FloatArray, fence_idx: NDArray[np.intp]
    ) -> FloatArray:
        """Signed distance in metres (negative inside) from each point to the paired fence."""
        signed = np.empty(len(fence_idx), dtype=np.float64)
        circle = self._is_circle[fence_idx]
        if circle.any():
            f = fence_idx[circle]
            signed[circle] = (
                haversine_m(lons[circle], lats[circle], self._lon0[f], self._lat0[f])
                - self._radius[f]
            )
        polygon = ~circle
        if polygon.any():
            f = fence_idx[polygon]
            x, y = self.local_xy(lons[polygon], lats[polygon], f)
            inside = shapely.contains_xy(self._local[f], x, y)
            edge = shapely.distance(self._boundary[f], points_xy(x, y))
            signed[polygon] = np.where(inside, -edge, edge)
        return signed

    def farther_than(
        self,
        lons: FloatArray,
        lats: FloatArray,
        fence_idx: NDArray[np.intp],
        limits: FloatArray,
    ) -> NDArray[np.bool_]:
        """Whether each point's signed distance to the paired fence exceeds its limit (>= 0).

        For a polygon the point's distance d from the anchor bounds its distance to the fence:
        at least d - reach, at most d - inner; the exact distance is computed only where the
        limit falls between the two."""
        circle = self._is_circle[fence_idx]
        if not circle.any():  # polygons only
            return self._polygons_farther_than(lons, lats, fence_idx, limits)
        result = np.empty(len(fence_idx), dtype=bool)
        f = fence_idx[circle]
        result[circle] = (
            haversine_m(lons[circle], lats[circle], self._lon0[f], self._lat0[f]) - self._radius[f]
            > limits[circle]
        )
        polygon = (~circle).nonzero()[0]
        if polygon.size:
            result[polygon] = self._polygons_farther_than(
                lons[polygon], lats[polygon], fence_idx[polygon], limits[polygon]
            )
        return result

    def _polygons_farther_than(
        self, lons: FloatArray, lats: FloatArray, f: NDArray[np.intp], limit: FloatArray
    ) -> NDArray[np.bool_]:
        x, y = self.local_xy(lons, lats, f)
        d = np.hypot(x, y)
        slack = 1e-6 * (1.0 + d)
        far: NDArray[np.bool_] = d - self._reach[f] > limit + slack
        unsure = (~far & (d - self._inner[f] > limit - slack)).nonzero()[0]
        if unsure.size:
            far[unsure] = (
                shapely.distance(self._local[f[unsure]], points_xy(x[unsure], y[unsure]))
                > limit[unsure]
            )
        return far

    def candidates(
        self, lons: FloatArray, lats: FloatArray, depths: FloatArray | None = None
    ) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.bool_]]:
        """Every (point, fence) pair whose point lies inside the fence (boundary included),
        ordered by point, then fence; and for each, whether the point lies at least
        ``depths[point]`` metres inside (all True without ``depths``).

        A polygon's point is first placed by its distance d from the anchor: within the inner
        disk it is inside, beyond the reach outside; its depth is at least inner - d and at most
        reach - d. Exact containment and edge distances are computed only where these cannot
        decide."""
        empty = np.empty(0, dtype=np.intp)
        if not self.fences or len(lons) == 0:
            return empty, empty, np.empty(0, dtype=bool)
        point_idx, fence_idx = self._envelope_pairs(lons, lats)
        circle = self._is_circle[fence_idx]
        mixed = bool(circle.any())
        polygon = (~circle).nonzero()[0] if mixed else None
        f, p = (fence_idx[polygon], point_idx[polygon]) if mixed else (fence_idx, point_idx)
        x, y = self.local_xy(lons[p], lats[p], f)
        d = np.hypot(x, y)
        slack = 1e-6 * (1.0 + d)
        # Within the inner disk: inside; beyond the reach: outside; exact only between.
        inner, reach = self._inner[f], self._reach[f]
        inside = d <= inner - slack
        unsure = (~inside & (d <= reach + slack)).nonzero()[0]
        if unsure.size:
            inside[unsure] = shapely.intersects_xy(
                self._lonlat[f[unsure]], lons[p[unsure]], lats[p[unsure]]
            )
        deep = inside
        if depths is not None:
            need = depths[p]
            deep = inside & ((need <= 0.0) | (inner - d >= need + slack))
            unsure = (inside & ~deep & (reach - d >= need - slack)).nonzero()[0]
            if unsure.size:
                edge = shapely.distance(self._boundary[f[unsure]], points_xy(x[unsure], y[unsure]))
                deep[unsure] = edge >= need[unsure]
        if not mixed:  # polygons only (circle pairs have no local frame: skipped above)
            return p[inside], f[inside], deep[inside]
        keep = np.empty(point_idx.size, dtype=bool)
        deep_all = np.empty(point_idx.size, dtype=bool)
        keep[polygon], deep_all[polygon] = inside, deep
        f, p = fence_idx[circle], point_idx[circle]
        signed = haversine_m(lons[p], lats[p], self._lon0[f], self._lat0[f]) - self._radius[f]
        keep[circle] = signed <= 0.0
        deep_all[circle] = signed + depths[p] <= 0.0 if depths is not None else True
        return point_idx[keep], fence_idx[keep], deep_all[keep]

    def _envelope_pairs(
        self, lons: FloatArray, lats: FloatArray
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(point, fence) pairs whose point lies in the fence's envelope, ordered by point then
        fence: one tree query per run of consecutive points (its box), per point where a run is
        spread out or crowded."""
        n = len(lons)
        if n < RUN_LENGTH:
            point_idx, fence_idx = self.tree.query(points_xy(lons, lats))
        else:
            point_idx, fence_idx = self._run_pairs(lons, lats)
        order = np.lexsort((fence_idx, point_idx))
        return point_idx[order], fence_idx[order]

    def _run_pairs(
        self, lons: FloatArray, lats: FloatArray
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        n = len(lons)
        count = -(-n // RUN_LENGTH)
        # The points as one row per run, the last one padded with nan (which no envelope holds).
        flat_x, flat_y = np.empty(count * RUN_LENGTH), np.empty(count * RUN_LENGTH)
        flat_x[:n], flat_y[:n] = lons, lats
        flat_x[n:] = flat_y[n:] = np.nan
        xs, ys = flat_x.reshape(count, RUN_LENGTH), flat_y.reshape(count, RUN_LENGTH)
        west, east = np.fmin.reduce(xs, axis=1), np.fmax.reduce(xs, axis=1)
        south, north = np.fmin.reduce(ys, axis=1), np.fmax.reduce(ys, axis=1)
        compact = (east - west <= RUN_SPAN_DEG) & (north - south <= RUN_SPAN_DEG)
        runs = compact.nonzero()[0]
        run_idx, fence_idx = self.tree.query(
            shapely.box(west[runs], south[runs], east[runs], north[runs])
        )
        crowded = np.bincount(run_idx, minlength=runs.size) > RUN_MAX_FENCES
        if crowded.any():
            compact[runs[crowded]] = False
            kept = ~crowded[run_idx]
            run_idx, fence_idx = run_idx[kept], fence_idx[kept]
        # Each (run, fence) pair against the run's points at once: a row of RUN_LENGTH tests.
        rows = runs[run_idx]
        envelope = self._envelopes[fence_idx]
        x, y = xs[rows], ys[rows]
        within = (
            (x >= envelope[:, 0:1])
            & (x <= envelope[:, 2:3])
            & (y >= envelope[:, 1:2])
            & (y <= envelope[:, 3:4])
        )
        pair, column = within.nonzero()
        point_idx = rows[pair] * RUN_LENGTH + column
        fence_idx = fence_idx[pair]
        if not compact.all():  # spread-out or crowded runs: a query per point
            spread = (~compact).repeat(RUN_LENGTH)[:n].nonzero()[0]
            p, f = self.tree.query(points_xy(lons[spread], lats[spread]))
            point_idx = np.concatenate((point_idx, spread[p]))
            fence_idx = np.concatenate((fence_idx, f))
        return point_idx, fence_idx

    def match(self, lons: Sequence[float], lats: Sequence[float]) -> list[list[Fence]]:
        """For each point, the fences that contain it (boundary included)."""
        result: list[list[Fence]] = [[] for _ in range(len(lons))]
        point_idx, fence_idx, _ = self.candidates(
            np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64)
        )
        for p, f in zip(point_idx.tolist(), fence_idx.tolist(), strict=True):
            result[p].append(self.fences[f])
        return result


@dataclass(slots=True)
class FixBatch:
    """Fixes as columns, the shape the matcher works on. ``nan`` marks an absent value."""

    device_ids: list[str]
    lon: FloatArray
    lat: FloatArray
    t: FloatArray  # UNIX seconds
    accuracy: FloatArray
    speed: FloatArray
    heading: FloatArray
    mock: NDArray[np.bool_]
    ping_ids: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.device_ids)

    @classmethod
    def of(cls, fixes: Sequence[Fix]) -> FixBatch:
        n = len(fixes)
        nan = float("nan")

        def column(values: Any) -> FloatArray:
            return np.fromiter(values, dtype=np.float64, count=n)

        ids = [f.ping_id for f in fixes]
        return cls(
            device_ids=[f.device_id for f in fixes],
            lon=column(f.lon for f in fixes),
            lat=column(f.lat for f in fixes),
            t=column(f.recorded_at.timestamp() for f in fixes),
            accuracy=column(nan if f.accuracy_m is None else f.accuracy_m for f in fixes),
            speed=column(nan if f.speed_mps is None else f.speed_mps for f in fixes),
            heading=column(nan if f.heading_deg is None else f.heading_deg for f in fixes),
            mock=np.fromiter((f.mock for f in fixes), dtype=bool, count=n),
            ping_ids=ids if any(i is not None for i in ids) else None,
        )

    def fix(self, i: int) -> Fix:
        def opt(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        return Fix(
            self.device_ids[i],
            float(self.lon[i]),
            float(self.lat[i]),
            datetime.fromtimestamp(float(self.t[i]), UTC),
            opt(self.accuracy[i]),
            opt(self.speed[i]),
            opt(self.heading[i]),
            bool(self.mock[i]),
            self.ping_ids[i] if self.ping_ids is not None else None,
        )
