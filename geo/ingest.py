"""Import stores and their fences from files: GeoJSON, GeoPackage, zipped Shapefile and CSV.

A file is read in chunks (geopandas with the pyogrio engine for vector formats, pandas for CSV),
reprojected to EPSG:4326 and turned into ``StoreSpec`` rows that ``StoreCatalog.upsert`` writes by
external id, one transaction per chunk: memory stays bounded, a re-import of the same file changes
nothing, and a row is either written whole or reported with a reason. Rows are numbered from 1 in
file order (a CSV's header is not a row).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd  # type: ignore[import-untyped]
import pyogrio  # type: ignore[import-untyped]
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
from shapely.geometry import mapping
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock
from core.db import transaction
from core.errors import InvalidInput
from geo.domain import validate_circle
from geo.service import FenceSpec, StoreCatalog, StoreSpec, validate_timezone

log = logging.getLogger(__name__)

WGS84 = CRS.from_epsg(4326)
CHUNK_ROWS = 2_000
MAX_TEXT = 200  # length of stores.name and stores.external_id
FORMATS = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".gpkg": "GeoPackage",
    ".zip": "zipped Shapefile",
    ".shp": "Shapefile",
    ".csv": "CSV",
}
ID_COLUMNS = ("external_id", "id", "osm_id")
RADIUS_COLUMNS = ("radius_m", "radius")
COORDINATE_COLUMNS = (("lon", "lat"), ("longitude", "latitude"), ("x", "y"))
LABEL_COLUMNS = ("fclass", "value", "kind", "amenity", "shop")  # for a name when it is empty
TRUE_TEXT, FALSE_TEXT = {"true", "1", "yes", "t"}, {"false", "0", "no", "f"}

Progress = Callable[[int, int], None]


class ImportFileError(InvalidInput):
    """The file as a whole cannot be imported: missing, unreadable, unknown format or columns."""

    code = "unreadable_file"


@dataclass(frozen=True, slots=True)
class ImportOptions:
    radius_m: float = 50.0  # circle radius for points without a radius column value
    id_column: str | None = None  # default: external_id, id, osm_id (see ``_Columns``)
    name_column: str | None = None  # default: name
    timezone: str = "UTC"  # IANA zone given to every imported store
    layer: str | None = None  # GeoPackage (or multi-layer) layer name
    crs: str | None = None  # CRS of coordinates when the file declares none (a CSV never does)


@dataclass(slots=True)
class ImportReport:
    file: str
    format: str
    layer: str | None = None
    source_crs: str = "EPSG:4326"
    total_rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row number, reason)
    notes: list[str] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged

    def to_dict(self, max_rejected: int | None = None) -> dict[str, Any]:
        shown = self.rejected if max_rejected is None else self.rejected[:max_rejected]
        return {
            "file": self.file,
            "format": self.format,
            "layer": self.layer,
            "source_crs": self.source_crs,
            "total_rows": self.total_rows,
            "imported": self.imported,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected_count": len(self.rejected),
            "rejected": [{"row": row, "reason": reason} for row, reason in shown],
            "notes": list(self.notes),
        }


@dataclass(slots=True)
class _Chunk:
    first_row: int
    frame: Any  # GeoDataFrame in EPSG:4326; geometry None where ``problems`` says why
    problems: dict[int, str] = field(default_factory=dict)  # position in chunk -> reason


@dataclass(slots=True)
class _Source:
    format: str
    layer: str | None
    crs: str
    columns: list[str]
    total: int
    chunks: Callable[[int], Iterator[_Chunk]]
    notes: list[str] = field(default_factory=list)


class StoreImporter:
    """Reads a file and upserts its rows as stores; see the module docstring."""

    def __init__(
        self, sessions: sessionmaker[Session], clock: Clock, *, chunk_rows: int = CHUNK_ROWS
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._chunk_rows = chunk_rows

    def run(
        self,
        path: Path,
        options: ImportOptions | None = None,
        *,
        progress: Progress | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> ImportReport:
        """Import ``path``. ``progress(rows_done, rows_total)`` follows each chunk; ``on_done``
        runs once after the last chunk if anything was written (even when a later chunk failed),
        e.g. to have every process rebuild its fence index."""
        options = options or ImportOptions()
        _check_options(options)
        source = open_source(Path(path), options)
        columns = _Columns.resolve(source.columns, options)
        report = ImportReport(
            file=Path(path).name,
            format=source.format,
            layer=source.layer,
            source_crs=source.crs,
            total_rows=source.total,
            notes=[*source.notes, *columns.notes],
        )
        now = self._clock.now()
        seen: dict[str, int] = {}
        done = 0
        if progress:
            progress(0, source.total)
        try:
            for chunk in source.chunks(self._chunk_rows):
                self._write_chunk(chunk, columns, options, seen, now, report)
                done += len(chunk.frame)
                report.total_rows = max(report.total_rows, done)
                if progress:
                    progress(done, report.total_rows)
        finally:
            if on_done and (report.created or report.updated):
                on_done()
        report.rejected.sort()
        return report

    def _write_chunk(
        self,
        chunk: _Chunk,
        columns: _Columns,
        options: ImportOptions,
        seen: dict[str, int],
        now: Any,
        report: ImportReport,
    ) -> None:
        rows: list[int] = []
        specs: list[StoreSpec] = []
        records = chunk.frame.drop(columns=chunk.frame.geometry.name).to_dict("records")
        for position, (record, geometry) in enumerate(
            zip(records, chunk.frame.geometry.values, strict=True)
        ):
            row = chunk.first_row + position
            spec = _spec(record, geometry, chunk.problems.get(position), columns, options)
            if isinstance(spec, str):
                report.rejected.append((row, spec))
                continue
            first = seen.setdefault(str(spec.external_id), row)
            if first != row:
                report.rejected.append((row, f"external id '{spec.external_id}' is already "
                                             f"used by row {first}"))
                continue
            rows.append(row)
            specs.append(spec)
        if not specs:
            return
        with transaction(self._sessions) as session:
            result = StoreCatalog(session).upsert(specs, now, first_row=0)
        report.created += result.created
        report.updated += result.updated
        report.unchanged += result.unchanged
        report.rejected.extend((rows[offset], reason) for offset, reason in result.rejected)


def _check_options(options: ImportOptions) -> None:
    validate_timezone(options.timezone)
    validate_circle(0.0, 0.0, options.radius_m)


# ---------------------------------------------------------------- reading files


def open_source(path: Path, options: ImportOptions) -> _Source:
    """What the file is, its CRS, columns and row count, and a way to read it chunk by chunk."""
    if not path.is_file():
        raise ImportFileError(f"file not found: {path}", code="file_not_found")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ImportFileError(
            f"unsupported file type '{suffix or path.name}': use .geojson/.json (GeoJSON), "
            ".gpkg (GeoPackage), .zip (zipped Shapefile) or .csv (lon/lat columns)",
            code="unsupported_format",
        )
    assumed = _user_crs(options.crs) if options.crs else WGS84
    if suffix == ".csv":
        return _csv_source(path, assumed)
    return _vector_source(path, FORMATS[suffix], options.layer, assumed)


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


def _vector_source(path: Path, kind: str, layer: str | None, assumed: CRS) -> _Source:
    notes: list[str] = []
    try:
        layers = [(str(n), g) for n, g in pyogrio.list_layers(path)]
        spatial = [name for name, geometry_type in layers if geometry_type is not None]
        if layer is None and len(spatial) > 1:
            raise ImportFileError(
                f"the file has {len(spatial)} layers with geometry ({', '.join(spatial)}); "
                "choose one with the layer option",
                code="layer_required",
            )
        if layer is not None and layer not in (name for name, _ in layers):
            names = ", ".join(name for name, _ in layers)
            raise ImportFileError(f"no layer '{layer}' in the file; its layers: {names}",
                                  code="unknown_layer")
        layer = layer or (spatial[0] if spatial else None)
        info = pyogrio.read_info(path, layer=layer, force_feature_count=True)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise ImportFileError(f"cannot read the file as {kind}: {exc}") from exc
    if info.get("crs"):
        crs = CRS.from_user_input(info["crs"])
        crs_text = _crs_name(crs)
        if kind == "GeoJSON" and crs.to_epsg() == 4326:
            notes.append("GeoJSON coordinates read as lon/lat on WGS 84 (EPSG:4326, RFC 7946)")
    else:
        crs, crs_text = assumed, f"{_crs_name(assumed)} (assumed: the file declares no CRS)"
        notes.append(f"the file declares no CRS; its coordinates were taken as {_crs_name(assumed)}")
    total = max(int(info.get("features") or 0), 0)
    columns = [str(c) for c in info.get("fields", [])]

    def chunks(size: int) -> Iterator[_Chunk]:
        start = 0
        while True:
            try:
                frame = gpd.read_file(path, engine="pyogrio", layer=layer, skip_features=start,
                                      max_features=size)
            except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
                raise ImportFileError(f"cannot read rows from {start + 1}: {exc}") from exc
            if frame.empty:
                return
            if frame.crs is None:
                frame = frame.set_crs(crs)
            yield _Chunk(start + 1, _to_wgs84(frame, crs))
            start += len(frame)
            if len(frame) < size:
                return

    shown_layer = layer if len(layers) > 1 or kind == "GeoPackage" else None
    return _Source(kind, shown_layer, crs_text, columns, total, chunks, notes)


def _csv_source(path: Path, crs: CRS) -> _Source:
    read: dict[str, Any] = {"dtype": str, "keep_default_na": False, "encoding": "utf-8-sig"}
    try:
        columns = [str(c) for c in pd.read_csv(path, nrows=0, **read).columns]
        total = sum(len(c) for c in pd.read_csv(path, usecols=[0], chunksize=50_000, **read))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as exc:
        raise ImportFileError(f"cannot read the file as CSV (UTF-8, comma-separated): {exc}") from exc
    lookup = {c.lower(): c for c in columns}
    pair = next(((lookup[x], lookup[y]) for x, y in COORDINATE_COLUMNS
                 if x in lookup and y in lookup), None)
    if pair is None:
        raise ImportFileError(
            "the CSV has no coordinate columns: expected lon/lat, longitude/latitude or x/y; "
            f"its columns: {', '.join(columns) or '(none)'}",
            code="no_coordinates",
        )
    x_column, y_column = pair
    stated = _crs_name(crs)
    note = f"CSV coordinates ({x_column}/{y_column}) taken as {stated}"

    def chunks(size: int) -> Iterator[_Chunk]:
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
                geo_frame = gpd.GeoDataFrame(frame, geometry=points, crs=crs)
                yield _Chunk(first, _to_wgs84(geo_frame, crs), problems)
                first += len(frame)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ImportFileError(f"cannot read CSV rows from {first}: {exc}") from exc

    return _Source("CSV", None, stated, columns, total, chunks, [note])


# ---------------------------------------------------------------- rows -> store specs


@dataclass(frozen=True, slots=True)
class _Columns:
    """Which columns give the external id, name, radius and a fallback label."""

    external_id: str | None
    osm_type: str | None
    from_way: str | None
    name: str | None
    radius: str | None
    labels: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, columns: list[str], options: ImportOptions) -> _Columns:
        lookup = {c.lower(): c for c in columns}
        listed = ", ".join(columns) or "(none)"

        def chosen(name: str, what: str) -> str:
            if name.lower() not in lookup:
                raise ImportFileError(f"no column '{name}' for the {what}; columns: {listed}",
                                      code="unknown_column")
            return lookup[name.lower()]

        osm_type = from_way = None
        notes: list[str] = []
        if options.id_column:
            external_id: str | None = chosen(options.id_column, "external id")
        else:
            external_id = next((lookup[c] for c in ID_COLUMNS if c in lookup), None)
            if external_id is None:
                raise ImportFileError(
                    f"no external id column ({', '.join(ID_COLUMNS)}); choose one with the id "
                    f"column option; columns: {listed}",
                    code="no_id_column",
                )
            if external_id == lookup.get("osm_id"):
                osm_type = lookup.get("osm_type")
                from_way = None if osm_type else lookup.get("from_way")
                if osm_type or from_way:
                    notes.append("external ids are OpenStreetMap references like 'way/123' "
                                 f"(from {osm_type or from_way} and osm_id)")
        name = chosen(options.name_column, "name") if options.name_column else lookup.get("name")
        radius = next((lookup[c] for c in RADIUS_COLUMNS if c in lookup), None)
        labels = tuple(lookup[c] for c in LABEL_COLUMNS if c in lookup)
        return cls(external_id, osm_type, from_way, name, radius, labels, tuple(notes))

    def external_id_of(self, record: dict[str, Any]) -> str:
        value = _text(record.get(self.external_id)) if self.external_id else ""
        if not value:
            return ""
        if self.osm_type:
            kind = _text(record.get(self.osm_type))
            return f"{kind}/{value}" if kind else value
        if self.from_way:
            flag = _text(record.get(self.from_way)).lower()
            if flag in TRUE_TEXT | FALSE_TEXT:
                return f"{'way' if flag in TRUE_TEXT else 'relation'}/{value}"
        return value

    def name_of(self, record: dict[str, Any], external_id: str) -> str:
        name = _text(record.get(self.name)) if self.name else ""
        if not name:
            label = next((t for c in self.labels if (t := _text(record.get(c)))), "store")
            name = f"{label} {external_id}"
        return name[:MAX_TEXT]


def _spec(
    record: dict[str, Any],
    geometry: Any,
    problem: str | None,
    columns: _Columns,
    options: ImportOptions,
) -> StoreSpec | str:
    """A store to upsert, or the reason the row cannot be one."""
    external_id = columns.external_id_of(record)
    if not external_id:
        return f"no external id (column '{columns.external_id}' is empty)"
    if len(external_id) > MAX_TEXT:
        return f"external id is {len(external_id)} characters long; at most {MAX_TEXT}"
    fence = problem or _fence(geometry, record, columns, options)
    if isinstance(fence, str):
        return fence
    return StoreSpec(
        name=columns.name_of(record, external_id),
        fence=fence,
        external_id=external_id,
        timezone=options.timezone,
    )


def _fence(
    geometry: Any, record: dict[str, Any], columns: _Columns, options: ImportOptions
) -> FenceSpec | str:
    if geometry is None:
        return "no geometry"
    if geometry.is_empty:
        return "empty geometry"
    kind = geometry.geom_type
    if kind == "Point":
        radius = options.radius_m
        text = _text(record.get(columns.radius)) if columns.radius else ""
        if text:
            try:
                radius = float(text)
            except ValueError:
                return f"radius {text!r} is not a number of metres"
        return FenceSpec(lon=float(geometry.x), lat=float(geometry.y), radius_m=radius)
    if kind in ("Polygon", "MultiPolygon"):
        return FenceSpec(geojson=_lists(mapping(shapely.force_2d(geometry))))
    return f"geometry type {kind} is not a fence; use a Point (circle) or a Polygon/MultiPolygon"


def _lists(value: Any) -> Any:
    """GeoJSON from ``mapping`` (tuples) as plain lists and floats, as it reads back from JSON."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return float(value) if isinstance(value, int | float) else value


def _text(value: Any) -> str:
    """A cell as trimmed text; missing values are ''; 4253124.0 reads as '4253124'."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    elif pd.api.types.is_scalar(value) and pd.isna(value):
        return ""
    return str(value).strip()
