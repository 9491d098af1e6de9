"""Campaign manager: import stores and fences from an uploaded file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Query, Response, UploadFile
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from api.deps import ActorDep, RuntimeDep, require_manager
from api.errors import ErrorResponse
from core.audit import audit
from core.db import transaction
from geo.feature_files import FORMATS, ImportFileError
from geo.ingest import ImportOptions, StoreImporter

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_REJECTED_SHOWN = 1_000
COPY_BLOCK = 1024 * 1024

ERRORS: dict[int | str, dict[str, object]] = {s: {"model": ErrorResponse} for s in (401, 413, 422)}
router = APIRouter(
    prefix="/v1/manager", tags=["manager"], dependencies=[require_manager], responses=ERRORS
)


class RejectedRow(BaseModel):
    row: int
    reason: str


class ImportReportOut(BaseModel):
    file: str
    format: str
    layer: str | None
    source_crs: str
    total_rows: int
    imported: int
    created: int
    updated: int
    unchanged: int
    rejected_count: int
    rejected: list[RejectedRow]
    notes: list[str]


@router.post(
    "/stores/import",
    status_code=201,
    response_model=ImportReportOut,
    responses={200: {"model": ImportReportOut, "description": "Nothing new was created"}},
    summary="Import stores and fences from a file (upsert by external id)",
    description=(
        "Upload a GeoJSON (.geojson/.json), GeoPackage (.gpkg), zipped Shapefile (.zip) or CSV "
        "(.csv with lon/lat, longitude/latitude or x/y columns and an optional radius_m column). "
        "Points become circles, Polygon/MultiPolygon become polygon fences; any CRS is "
        "reprojected to EPSG:4326. Stores are matched by external id, so importing the same file "
        "again changes nothing. 201 when stores were created, 200 otherwise; rejected rows are "
        f"listed with their reason (the first {MAX_REJECTED_SHOWN}). "
        f"Files up to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
    ),
)
def import_stores(
    runtime: RuntimeDep,
    response: Response,
    actor: ActorDep,
    file: Annotated[UploadFile, File(description="The file; its name's suffix gives the format")],
    radius_m: Annotated[
        float,
        Query(gt=0, le=50_000, allow_inf_nan=False, description="Radius of circles from points"),
    ] = 50,
    id_column: Annotated[str | None, Query(max_length=100)] = None,
    name_column: Annotated[str | None, Query(max_length=100)] = None,
    timezone: Annotated[str, Query(max_length=64, description="IANA zone of every store")] = "UTC",
    layer: Annotated[str | None, Query(max_length=200)] = None,
    crs: Annotated[
        str | None, Query(max_length=200, description="CRS when the file declares none")
    ] = None,
) -> ImportReportOut:
    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in FORMATS:
        raise ImportFileError(
            f"unsupported file type '{suffix or file.filename or '(no name)'}': upload .geojson/"
            ".json, .gpkg, .zip (zipped Shapefile) or .csv",
            code="unsupported_format",
        )
    options = ImportOptions(
        radius_m=radius_m,
        id_column=id_column,
        name_column=name_column,
        timezone=timezone,
        layer=layer,
        crs=crs,
    )
    with tempfile.TemporaryDirectory(prefix="store-import-") as folder:
        path = Path(folder) / f"upload{suffix}"
        _save(file, path)
        report = StoreImporter(runtime.sessions, runtime.clock).run(
            path, options, on_done=runtime.fences.announce_change
        )
    report.file = Path(file.filename or path.name).name
    response.status_code = 201 if report.created else 200
    out = ImportReportOut.model_validate(report.to_dict(max_rejected=MAX_REJECTED_SHOWN))
    with transaction(runtime.sessions) as session:
        audit(
            session,
            actor=actor,
            action="store.import",
            at=runtime.clock.now(),
            details=out.model_dump(include={"file", "created", "updated", "rejected_count"}),
        )
    return out


def _save(upload: UploadFile, path: Path) -> None:
    """Copy the upload to ``path``, refusing it once it passes the size limit."""
    written = 0
    with path.open("wb") as out:
        while block := upload.file.read(COPY_BLOCK):
            written += len(block)
            if written > MAX_UPLOAD_BYTES:
                raise HTTPException(
                    413, f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB"
                )
            out.write(block)
    if written == 0:
        raise ImportFileError("the uploaded file is empty", code="empty_file")
