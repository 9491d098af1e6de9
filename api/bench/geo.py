"""``offer-engine bench geo``: the engine's batch matcher against bare STRtree and PostGIS.

One run, one data set: clustered 16-gon store fences (town centres with stores spread around
them) and shoppers walking among them, sent as one-device batches of 1,000 fixes like the SDK
sends. Measured on one core, each in-process figure as the best of ``repeat`` runs (5 by
default), the three in-process measurements taking turns:

- engine: ``BatchMatcher.process`` (candidates, exact distances, accuracy rule, ordering, jumps,
  enter/exit/dwell state) without prediction, then with it (the overhead);
- bare: ``shapely.STRtree.query(points, predicate="intersects")`` over the same polygons;
- PostGIS: ``ST_Intersects`` join with a GiST index, when the database URL is PostgreSQL and the
  extension is available (else skipped, with the reason).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from core.db import make_engine
from geo.domain import FenceIndex, FixBatch, PolygonFence
from geo.geometry import METRES_PER_DEGREE, PolygonShape
from geo.matcher import BatchMatcher
from geo.prediction import PredictionRules
from geo.tracking import TrackingRules

BATCH = 1_000
SIDES = 16
ORIGIN = (-73.98, 40.75)  # a city-sized region; shapes are synthetic


@dataclass(frozen=True, slots=True)
class GeoBenchResult:
    fences: int
    pings: int
    engine_pings_per_s: float
    engine_predict_pings_per_s: float
    strtree_pings_per_s: float
    postgis_pings_per_s: float | None
    postgis_note: str
    transitions: int
    approaching: int
    postgis_pairs: int | None = None  # (ping, fence) pairs PostGIS found in its sample
    strtree_pairs: int | None = None  # the bare tree's pairs in the same sample

    @property
    def predict_overhead(self) -> float:
        return self.engine_pings_per_s / self.engine_predict_pings_per_s - 1.0

    def result_line(self) -> str:
        postgis = (
            "skipped" if self.postgis_pings_per_s is None else f"{self.postgis_pings_per_s:.0f}"
        )
        return (
            f"RESULT engine_pings_per_s={self.engine_pings_per_s:.0f} "
            f"strtree_pings_per_s={self.strtree_pings_per_s:.0f} postgis_pings_per_s={postgis} "
            f"predict_overhead={self.predict_overhead:.3f}"
        )


def _offset(
    lon0: float, lat0: float, east: np.ndarray, north: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    lat = lat0 + north / METRES_PER_DEGREE
    lon = lon0 + east / (METRES_PER_DEGREE * math.cos(math.radians(lat0)))
    return lon, lat


def make_fences(count: int, rng: np.random.Generator) -> tuple[list[PolygonFence], np.ndarray]:
    """Stores around town centres: 16-gons of 15-60 m radius. Returns fences and the centres."""
    centres_n = max(1, count // 500)
    c_east = rng.uniform(-60_000, 60_000, centres_n)
    c_north = rng.uniform(-60_000, 60_000, centres_n)
    which = rng.integers(0, centres_n, count)
    spread = rng.uniform(200, 1_500, centres_n)[which]
    east = c_east[which] + rng.normal(0, 1, count) * spread
    north = c_north[which] + rng.normal(0, 1, count) * spread
    lon, lat = _offset(*ORIGIN, east, north)
    radius = rng.uniform(15, 60, count)
    angles = np.linspace(0, 2 * math.pi, SIDES, endpoint=False)
    fences = []
    for i in range(count):
        ring_lon, ring_lat = _offset(
            float(lon[i]), float(lat[i]), radius[i] * np.sin(angles), radius[i] * np.cos(angles)
        )
        ring = [[float(a), float(b)] for a, b in zip(ring_lon, ring_lat, strict=True)]
        ring.append(ring[0])
        fences.append(
            PolygonFence(f"f{i}", f"s{i}", PolygonShape({"type": "Polygon", "coordinates": [ring]}))
        )
    centres = np.column_stack(_offset(*ORIGIN, c_east, c_north))
    return fences, centres


def make_batches(pings: int, centres: np.ndarray, rng: np.random.Generator) -> list[FixBatch]:
    """Shoppers walking (1.4 m/s, a fix every 5 s, wandering heading) near town centres."""
    batches = []
    t0 = 1_795_000_000.0
    for b in range(math.ceil(pings / BATCH)):
        n = min(BATCH, pings - b * BATCH)
        centre = centres[rng.integers(0, len(centres))]
        heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, 0.15, n))
        step = 1.4 * 5.0
        east = rng.normal(0, 800) + np.cumsum(step * np.sin(heading))
        north = rng.normal(0, 800) + np.cumsum(step * np.cos(heading))
        lon, lat = _offset(float(centre[0]), float(centre[1]), east, north)
        # Phones report speed and course with every fix; both carry noise.
        speed = np.clip(1.4 + rng.normal(0, 0.2, n), 0.0, None)
        course = (np.degrees(heading) + rng.normal(0, 8, n)) % 360.0
        batches.append(
            FixBatch(
                device_ids=[f"d{b}"] * n,
                lon=lon,
                lat=lat,
                t=t0 + 5.0 * np.arange(n, dtype=np.float64),
                accuracy=rng.uniform(5, 30, n),
                speed=speed,
                heading=course,
                mock=np.zeros(n, bool),
            )
        )
    return batches


def _rates(pings: int, runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Pings per second of each measurement's fastest of ``repeat`` runs (the least disturbed
    by the rest of the machine). The measurements take turns, so a slow spell of the machine
    falls on all of them alike rather than on one."""
    best = dict.fromkeys(runs, math.inf)
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: pings / seconds for name, seconds in best.items()}


def _engine(
    index: FenceIndex, batches: list[FixBatch], prediction: PredictionRules | None
) -> tuple[int, int]:
    matcher = BatchMatcher(TrackingRules(), prediction)
    records: dict[str, dict[str, object]] = {}
    transitions = approaching = 0
    for batch in batches:
        outcome = matcher.process(index, batch, records)
        records.update(outcome.records)
        transitions += len(outcome.transitions)
        approaching += outcome.predicted
    return transitions, approaching


def _postgis(
    database_url: str | None, fences: list[PolygonFence], batches: list[FixBatch], sample: int
) -> tuple[float | None, str, int]:
    """PostGIS's rate over the first ``sample`` pings, the note to print and the number of
    (ping, fence) pairs it found (for the comparison with the tree)."""
    if not database_url or not database_url.startswith("postgresql"):
        return None, "skipped: the database URL is not PostgreSQL", 0
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return None, f"skipped: PostGIS is not available here ({reason})", 0
    try:
        with engine.begin() as connection:
            connection.execute(
                text("CREATE TEMP TABLE bench_fences (id int, geom geometry(Polygon, 4326))")
            )
            wkb = [shapely.to_wkb(f.shape.lonlat, hex=True) for f in fences]
            for start in range(0, len(wkb), 5_000):
                connection.execute(
                    text(
                        "INSERT INTO bench_fences SELECT i, ST_GeomFromWKB(decode(w, 'hex'), 4326) "
                        "FROM unnest(CAST(:ids AS int[]), CAST(:wkb AS text[])) AS u(i, w)"
                    ),
                    {
                        "ids": list(range(start, start + len(wkb[start : start + 5_000]))),
                        "wkb": wkb[start : start + 5_000],
                    },
                )
            connection.execute(text("CREATE INDEX ON bench_fences USING gist (geom)"))
            connection.execute(text("ANALYZE bench_fences"))
            lons = np.concatenate([b.lon for b in batches])[:sample]
            lats = np.concatenate([b.lat for b in batches])[:sample]
            start_t = time.perf_counter()
            pairs = 0
            for s in range(0, sample, BATCH):
                pairs += len(
                    connection.execute(
                        text(
                            "SELECT p.i, f.id FROM "
                            "unnest(CAST(:lon AS float8[]), CAST(:lat AS float8[])) "
                            "WITH ORDINALITY AS p(lon, lat, i) JOIN bench_fences f "
                            "ON ST_Intersects(f.geom, ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326))"
                        ),
                        {"lon": lons[s : s + BATCH].tolist(), "lat": lats[s : s + BATCH].tolist()},
                    ).fetchall()
                )
            rate = len(lons) / (time.perf_counter() - start_t)
        return rate, f"measured on {len(lons):,} pings, batches of {BATCH}, GiST index", pairs
    finally:
        engine.dispose()


def run_geo_bench(
    fences: int,
    pings: int,
    database_url: str | None,
    postgis_sample: int = 100_000,
    repeat: int = 5,
    seed: int = 7,
    say: Callable[[str], None] = print,
) -> GeoBenchResult:
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    fence_list, centres = make_fences(fences, rng)
    batches = make_batches(pings, centres, rng)
    say(
        f"data: {fences:,} 16-gon fences around {len(centres)} centres, {pings:,} pings "
        f"in {len(batches):,} batches ({time.perf_counter() - start:.1f} s)"
    )
    start = time.perf_counter()
    index = FenceIndex(fence_list)
    say(f"engine index built in {time.perf_counter() - start:.1f} s")
    bare_tree = shapely.STRtree([f.shape.lonlat for f in fence_list])

    def bare() -> None:
        for batch in batches:
            bare_tree.query(shapely.points(batch.lon, batch.lat), predicate="intersects")

    counts: dict[str, tuple[int, int]] = {}

    def engine(name: str, prediction: PredictionRules | None) -> Callable[[], object]:
        return lambda: counts.__setitem__(name, _engine(index, batches, prediction))

    rates = _rates(
        pings,
        {
            "bare": bare,
            "engine": engine("engine", None),
            "predict": engine("predict", PredictionRules()),
        },
        repeat,
    )
    strtree_rate, engine_rate, predict_rate = rates["bare"], rates["engine"], rates["predict"]
    say(f"bare STRtree.query (intersects): {strtree_rate:,.0f} pings/s")
    say(f"engine batch matcher: {engine_rate:,.0f} pings/s ({counts['engine'][0]:,} transitions)")
    say(
        f"engine with prediction: {predict_rate:,.0f} pings/s "
        f"({counts['predict'][1]:,} approaching)"
    )
    sample = min(postgis_sample, pings)
    postgis_rate, note, postgis_pairs = _postgis(database_url, fence_list, batches, sample)
    strtree_pairs = None
    if postgis_rate is not None:  # the same question asked of the tree, for the same pings
        lons = np.concatenate([b.lon for b in batches])[:sample]
        lats = np.concatenate([b.lat for b in batches])[:sample]
        found = bare_tree.query(shapely.points(lons, lats), predicate="intersects")
        strtree_pairs = int(found.shape[1])
        note += f"; {postgis_pairs:,} (ping, fence) pairs, the bare tree {strtree_pairs:,}"
    say(
        "PostGIS ST_Intersects: "
        + ("-" if postgis_rate is None else f"{postgis_rate:,.0f} pings/s")
        + f" ({note})"
    )
    return GeoBenchResult(
        fences,
        pings,
        engine_rate,
        predict_rate,
        strtree_rate,
        postgis_rate,
        note,
        counts["predict"][0],
        counts["predict"][1],
        postgis_pairs if postgis_rate is not None else None,
        strtree_pairs,
    )
