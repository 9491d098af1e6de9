"""Feature files read chunk by chunk in EPSG:4326: GeoJSON, GeoPackage, (zipped) Shapefile, CSV.

Vector formats are read with geopandas on the pyogrio engine; a CSV with pandas, its points built
from lon/lat, longitude/latitude or x/y columns. Any CRS is reprojected to EPSG:4326; a file that
declares none is taken as EPSG:4326 (or the CRS the caller names), and the notes say so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd  # type: ignore[import-untyped]
import pyogrio  # type: ignore[import-untyped]
from pyproj import CRS
from pyproj.exceptions import CRSError

from core.errors import InvalidInput

WGS84 = CRS.from_epsg(4326)
FORMATS = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".gpkg": "GeoPackage",
    ".zip": "zipped Shapefile",
    ".shp": "Shapefile",
    ".csv": "CSV",
}
COORDINATE_COLUMNS = (("lon", "lat"), ("longitude", "latitude"), ("x", "y"))
OGR_ERRORS = (
    pyogrio.errors.DataSourceError,
    pyogrio.errors.DataLayerError,
    pyogrio.errors.FeatureError,
    pyogrio.errors.FieldError,
    pyogrio.errors.GeometryError,
)


class ImportFileError(InvalidInput):
    """The file as a whole cannot be imported: missing, unreadable, unknown format or columns."""

    code = "unreadable_file"


@dataclass(slots=True)
class Chunk:
    first_row: int  # 1-based number of the chunk's first row in the file
    frame: Any  # GeoDataFrame in EPSG:4326; geometry None where ``problems`` says why
    problems: dict[int, str] = field(default_factory=dict)  # position in chunk -> reason


@dataclass(slots=True)
class FeatureFile:
    format: str
    layer: str | None  # shown only for formats that hold several layers
    crs: str  # the source CRS as stated in a report
    columns: list[str]
    total: int  # rows in the file (layer)
    chunks: Callable[[int], Iterator[Chunk]]  # chunks of at most n rows, in file order
    notes: list[str] = field(default_factory=list)


def open_feature_file(
    path: Path, *, layer: str | None = None, crs: str | None = None
) -> FeatureFile:
    """What the file is, its CRS, columns and row count, and a way to read it chunk by chunk.
    ``crs`` names the CRS of coordinates when the file declares none (a CSV never does)."""
    if not path.is_file():
        raise ImportFileError(f"file not found: {path}", code="file_not_found")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ImportFileError(
            f"unsupported file type '{suffix or path.name}': use .geojson/.json (GeoJSON), "
            ".gpkg (GeoPackage), .zip (zipped Shapefile) or .csv (lon/lat columns)",
            code="unsupported_format",
        )
    assumed = _user_crs(crs) if crs else WGS84
    if suffix == ".csv":
        return _csv_file(path, assumed)
    return _vector_file(path, FORMATS[suffix], layer, assumed)


def _user_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except CRSError as exc:
        raise ImportFileError(f"unknown CRS '{text}'", code="invalid_crs") from exc


def _crs_name(crs: CRS) -> str:
    authority = crs.to_authority()
    return f"{authority[0]}:{authority[1]}" if authority else str(crs.name)


def _to_wgs84(frame: Any, crs: CRS) -> Any:
    return frame if crs.to_epsg() == 4326 else frame.to_crs(WGS84)


def _pick_layer(path: Path, layer: str | None) -> tuple[str | None, int]:
    layers = [(str(name), kind) for name, kind in pyogrio.list_layers(path)]
    spatial = [name for name, kind in layers if kind is not None]
    if layer is None and len(spatial) > 1:
        raise ImportFileError(
            f"the file has {len(spatial)} layers with geometry ({', '.join(spatial)}); "
            "choose one with the layer option",
            code="layer_required",
        )
    if layer is not None and layer not in (name for name, _ in layers):
        names = ", ".join(name for name, _ in layers)
        raise ImportFileError(
            f"no layer '{layer}' in the file; its layers: {names}", code="unknown_layer"
        )
    chosen = layer or (spatial[0] if spatial else None)
    if chosen is None or chosen not in spatial:
        what = "the file has no layer" if chosen is None else f"the layer '{chosen}' has no column"
        raise ImportFileError(
            f"{what} with geometry; stores need points or polygons", code="no_geometry"
        )
    return chosen, len(layers)


def _vector_file(path: Path, kind: str, layer: str | None, assumed: CRS) -> FeatureFile:
    notes: list[str] = []
    try:
        layer, layer_count = _pick_layer(path, layer)
        info = pyogrio.read_info(path, layer=layer, force_feature_count=True)
        declared = CRS.from_user_input(info["crs"]) if info.get("crs") else None
    except (*OGR_ERRORS, CRSError, OSError) as exc:
        raise ImportFileError(f"cannot read the file as {kind}: {exc}") from exc
    if declared is not None:
        crs, crs_text = declared, _crs_name(declared)
        if kind == "GeoJSON" and declared.to_epsg() == 4326:
            notes.append("GeoJSON coordinates read as lon/lat on WGS 84 (EPSG:4326, RFC 7946)")
    else:
        crs, crs_text = assumed, f"{_crs_name(assumed)} (assumed: the file declares no CRS)"
        notes.append(f"the file declares no CRS; its coordinates were taken as {_crs_name(crs)}")
    total = max(int(info.get("features") or 0), 0)
    columns = [str(c) for c in info.get("fields", [])]

    def chunks(size: int) -> Iterator[Chunk]:
        start = 0
        while True:
            try:
                frame = gpd.read_file(
                    path, engine="pyogrio", layer=layer, skip_features=start, max_features=size
                )
            except OGR_ERRORS as exc:
                raise ImportFileError(f"cannot read rows from {start + 1}: {exc}") from exc
            if frame.empty:
                return
            if frame.crs is None:
                frame = frame.set_crs(crs)
            yield Chunk(start + 1, _to_wgs84(frame, crs))
            start += len(frame)
            if len(frame) < size:
                return

    shown_layer = layer if layer_count > 1 or kind == "GeoPackage" else None
    return FeatureFile(kind, shown_layer, crs_text, columns, total, chunks, notes)


def _csv_file(path: Path, crs: CRS) -> FeatureFile:
    read: dict[str, Any] = {"dtype": str, "keep_default_na": False, "encoding": "utf-8-sig"}
    try:
        columns = [str(c) for c in pd.read_csv(path, nrows=0, **read).columns]
        total = sum(len(c) for c in pd.read_csv(path, usecols=[0], chunksize=50_000, **read))
    except ValueError as exc:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        raise ImportFileError(
            f"cannot read the file as CSV (UTF-8, comma-separated): {exc}"
        ) from exc
    lookup = {c.lower(): c for c in columns}
    pair = next(
        ((lookup[x], lookup[y]) for x, y in COORDINATE_COLUMNS if x in lookup and y in lookup), None
    )
    if pair is None:
        raise ImportFileError(
            "the CSV has no coordinate columns: expected lon/lat, longitude/latitude or x/y; "
            f"its columns: {', '.join(columns) or '(none)'}",
            code="no_coordinates",
        )
    x_column, y_column = pair

    def chunks(size: int) -> Iterator[Chunk]:
        first = 1
        try:
            for frame in pd.read_csv(path, chunksize=size, **read):
                frame = frame.reset_index(drop=True)
                x = pd.to_numeric(frame[x_column].str.strip(), errors="coerce")
                y = pd.to_numeric(frame[y_column].str.strip(), errors="coerce")
                usable = x.notna() & y.notna() & x.map(math.isfinite) & y.map(math.isfinite)
                points = gpd.GeoSeries([None] * len(frame), crs=crs)
                points[usable] = gpd.points_from_xy(x[usable], y[usable])
                problems = {
                    int(i): f"{x_column}/{y_column} missing or not numbers "
                    f"({frame.at[i, x_column]!r}, {frame.at[i, y_column]!r})"
                    for i in frame.index[~usable]
                }
                points_frame = gpd.GeoDataFrame(frame, geometry=points, crs=crs)
                yield Chunk(first, _to_wgs84(points_frame, crs), problems)
                first += len(frame)
        except ValueError as exc:
            raise ImportFileError(f"cannot read CSV rows from {first}: {exc}") from exc

    note = f"CSV coordinates ({x_column}/{y_column}) taken as {_crs_name(crs)}"
    return FeatureFile("CSV", None, _crs_name(crs), columns, total, chunks, [note])
