"""Compliance officer: a subject's full export, the ledger as NDJSON or CSV (streamed, with the
proofs to verify it offline), verification of the stored ledger, and "was this lawful at t?".

Every read here is itself audited (actor ``compliance``, what, which range or subject), in its
own committed transaction, before any data leaves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import RuntimeDep, SessionDep, require_compliance
from api.errors import ErrorResponse
from api.runtime import Runtime
from api.subject_export import subject_export
from consent.export import LedgerExporter, LedgerRange
from consent.records import find_subject, lawful_at
from consent.verify import verify_database
from core.audit import audit
from core.db import transaction
from core.errors import InvalidInput

ACTOR = "compliance"

router = APIRouter(
    prefix="/v1/compliance",
    tags=["compliance"],
    dependencies=[require_compliance],
    responses={s: {"model": ErrorResponse} for s in (401, 404, 422)},
)

From = Annotated[
    datetime | None,
    Query(alias="from", description="Entries recorded at or after this instant (ISO 8601)."),
]
To = Annotated[
    datetime | None, Query(alias="to", description="Entries recorded before this instant.")
]
MAX_ID = 2**63 - 1  # a BIGINT
FromId = Annotated[int | None, Query(ge=1, le=MAX_ID, description="First entry id (inclusive).")]
ToId = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Last entry id (inclusive).")]


def _audit(
    runtime: Runtime, request: Request, action: str, target: str | None, **details: Any
) -> None:
    client = request.client.host if request.client else None
    with transaction(runtime.sessions) as session:
        audit(
            session,
            actor=ACTOR,
            action=action,
            at=runtime.clock.now(),
            target=target,
            details={**details, "client": client},
        )


@router.get(
    "/subjects/{subject}/export",
    summary="Everything held about one subject (by subject id or customer reference), as JSON",
)
def export_subject(
    subject: Annotated[str, Path(min_length=1, max_length=200)],
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    found = find_subject(session, subject)
    _audit(runtime, request, "consent.subject_export", found.id, requested=subject)
    return subject_export(session, runtime.ledger_config.sealer, found, runtime.clock.now())


def _ledger(
    runtime: Runtime,
    fmt: str,
    start: datetime | None,
    end: datetime | None,
    first_id: int | None,
    last_id: int | None,
) -> StreamingResponse:
    exporter = LedgerExporter(runtime.sessions, runtime.ledger_config, runtime.clock)
    plan = exporter.begin(LedgerRange(start, end, first_id, last_id), fmt=fmt, actor=ACTOR)
    span = f"{plan.first_id or 0}-{plan.last_id or 0}"
    body = exporter.ndjson(plan) if fmt == "ndjson" else exporter.csv(plan)
    return StreamingResponse(
        body,
        media_type="application/x-ndjson" if fmt == "ndjson" else "text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="consent-ledger-{span}.{fmt}"'},
    )


@router.get(
    "/ledger.ndjson",
    summary="The ledger for a range as NDJSON: header, entries, checkpoints, signed trailer",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
def ledger_ndjson(
    runtime: RuntimeDep,
    start: From = None,
    end: To = None,
    from_id: FromId = None,
    to_id: ToId = None,
) -> StreamingResponse:
    return _ledger(runtime, "ndjson", start, end, from_id, to_id)


@router.get(
    "/ledger.csv",
    summary="The ledger for a range as CSV; header, checkpoints and trailer on '# ' lines",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def ledger_csv(
    runtime: RuntimeDep,
    start: From = None,
    end: To = None,
    from_id: FromId = None,
    to_id: ToId = None,
) -> StreamingResponse:
    return _ledger(runtime, "csv", start, end, from_id, to_id)


@router.get("/verify", summary="Verify the stored ledger: hash chain, checkpoints, head")
def verify(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    _audit(runtime, request, "consent.verify", "consent_events")
    result = verify_database(runtime.sessions, trusted_key=runtime.ledger_config.signer.public_key)
    return result.to_dict()


@router.get(
    "/receipts",
    summary="Was this lawful at time t? Receipts around t, the entry each relied on, and each "
    "consent as the ledger stood at t",
)
def receipts(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    subject_id: Annotated[
        str, Query(min_length=1, max_length=200, description="Subject id or customer reference.")
    ],
    at: Annotated[datetime, Query(description="The instant in question (ISO 8601, with zone).")],
    window_s: Annotated[int, Query(ge=0, le=86_400, description="Receipts within ± this.")] = 300,
) -> dict[str, Any]:
    if at.tzinfo is None:
        raise InvalidInput("'at' needs a time zone (e.g. 2026-11-23T09:00:00Z)")
    try:  # the window around 'at' must itself be a representable instant
        (at - timedelta(seconds=window_s)).astimezone(UTC)
        (at + timedelta(seconds=window_s)).astimezone(UTC)
    except OverflowError:
        raise InvalidInput("'at' is out of range (years 1 to 9999)") from None
    found = find_subject(session, subject_id)
    _audit(
        runtime, request, "consent.receipts_query", found.id, at=at.isoformat(), window_s=window_s
    )
    return lawful_at(session, found, at, timedelta(seconds=window_s))
