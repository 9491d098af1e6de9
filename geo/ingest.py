"""Import stores and their fences from files: GeoJSON, GeoPackage, zipped Shapefile and CSV.

A file is read in chunks (``geo.feature_files``: EPSG:4326 whatever the source CRS), its rows turned
into ``StoreSpec`` and written by ``StoreCatalog.upsert`` by external id, one transaction per chunk:
memory stays bounded, a re-import of the same file changes nothing, and a row is either written
whole or reported with a reason. Rows are numbered from 1 in file order (a CSV's header is not a
row).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import shapely
from shapely.geometry import mapping
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock
from core.db import transaction
from geo.domain import validate_circle
from geo.feature_files import Chunk, ImportFileError, open_feature_file
from geo.service import FenceSpec, StoreCatalog, StoreSpec, validate_timezone

CHUNK_ROWS = 2_000
MAX_TEXT = 200  # length of stores.name and stores.external_id
ID_COLUMNS = ("external_id", "id", "osm_id")
RADIUS_COLUMNS = ("radius_m", "radius")
LABEL_COLUMNS = ("fclass", "value", "kind", "amenity", "shop")  # for a name when it is empty
TRUE_TEXT, FALSE_TEXT = {"true", "1", "yes", "t"}, {"false", "0", "no", "f"}

Progress = Callable[[int, int], None]


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
        source = open_feature_file(Path(path), layer=options.layer, crs=options.crs)
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
        chunk: Chunk,
        columns: _Columns,
        options: ImportOptions,
        seen: dict[str, int],
        now: datetime,
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
                report.rejected.append(
                    (row, f"external id '{spec.external_id}' is already used by row {first}")
                )
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
                raise ImportFileError(
                    f"no column '{name}' for the {what}; columns: {listed}", code="unknown_column"
                )
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
                    notes.append(
                        "external ids are OpenStreetMap references like 'way/123' "
                        f"(from {osm_type or from_way} and osm_id)"
                    )
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
    name = columns.name_of(record, external_id)
    for what, text in (("external id", external_id), ("name", name)):
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            return f"the {what} holds a control character (e.g. NUL), which no text may hold"
    fence = problem or _fence(geometry, record, columns, options)
    if isinstance(fence, str):
        return fence
    return StoreSpec(
        name=name,
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
