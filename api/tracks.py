"""Recorded tracks for the simulator: GPX (track points, else route points or waypoints, through
pyogrio/GDAL) or CSV with time and lat/lon columns (through pandas)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]

from core.errors import InvalidInput

TIME_COLUMNS = ("time", "timestamp", "recorded_at", "datetime", "date_time")
LAT_COLUMNS = ("lat", "latitude", "y")
LON_COLUMNS = ("lon", "lng", "long", "longitude", "x")
TRIP_COLUMNS = ("trip_id", "trip", "track_id", "segment")


@dataclass(frozen=True, slots=True)
class TrackFix:
    at: datetime
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class Track:
    name: str
    fixes: list[TrackFix]
    note: str = ""


def _pick(columns: list[str], names: tuple[str, ...], what: str, path: Path) -> str:
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    raise InvalidInput(f"{path.name}: no {what} column (looked for {', '.join(names)})")


def _fixes(frame: pd.DataFrame, time_col: str, lon_col: str, lat_col: str) -> list[TrackFix]:
    times = pd.to_datetime(frame[time_col], utc=True, errors="coerce")
    clean = pd.DataFrame(
        {"t": times, "lon": frame[lon_col].astype(float), "lat": frame[lat_col].astype(float)}
    ).dropna()
    clean = clean.sort_values("t", kind="stable")
    return [
        TrackFix(t.to_pydatetime().astimezone(UTC), float(lon), float(lat))
        for t, lon, lat in zip(clean["t"], clean["lon"], clean["lat"], strict=True)
    ]


def read_csv_track(path: Path, trip: str | None = None) -> Track:
    frame = pd.read_csv(path, dtype=str)
    columns = list(frame.columns)
    time_col = _pick(columns, TIME_COLUMNS, "time", path)
    lat_col = _pick(columns, LAT_COLUMNS, "latitude", path)
    lon_col = _pick(columns, LON_COLUMNS, "longitude", path)
    note = "times without a zone are read as UTC"
    trip_col = next((c for c in columns if c.lower() in TRIP_COLUMNS), None)
    name = path.name
    if trip_col is not None:
        trips = frame[trip_col].astype(str)
        if trip is None:
            trip = str(trips.value_counts().idxmax())
            note += f"; {trips.nunique()} trips in the file, replaying the longest: {trip}"
        elif trip not in set(trips):
            raise InvalidInput(f"{path.name}: no trip '{trip}' in column {trip_col}")
        frame = frame[trips == trip]
        name = f"{path.name} trip {trip}"
    elif trip is not None:
        raise InvalidInput(f"{path.name}: --trip given but the file has no trip column")
    return Track(name, _fixes(frame, time_col, lon_col, lat_col), note)


def read_gpx_track(path: Path) -> Track:
    import pyogrio  # type: ignore[import-untyped]

    layers = [str(row[0]) for row in pyogrio.list_layers(path)]
    for layer in ("track_points", "route_points", "waypoints"):
        if layer not in layers:
            continue
        frame = pyogrio.read_dataframe(path, layer=layer)
        if len(frame) == 0 or "time" not in frame.columns:
            continue
        frame = frame.assign(lon=frame.geometry.x, lat=frame.geometry.y)
        return Track(f"{path.name} {layer}", _fixes(frame, "time", "lon", "lat"))
    raise InvalidInput(f"{path.name}: no GPX track, route or waypoints with times")


def read_track(path: Path, trip: str | None = None) -> Track:
    if not path.is_file():
        raise InvalidInput(f"no track file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".gpx":
        track = read_gpx_track(path)
    elif suffix in {".csv", ".txt"}:
        track = read_csv_track(path, trip)
    else:
        raise InvalidInput(f"{path.name}: a track is a .gpx or .csv file")
    if len(track.fixes) < 2:
        raise InvalidInput(f"{track.name}: fewer than two fixes with a time and a position")
    return track
