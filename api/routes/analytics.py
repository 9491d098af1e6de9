"""Campaign analytics (funnel, lift against the holdout, CSV), the audit log, the live feed."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from api.deps import RuntimeDep, SessionDep, require_manager
from api.errors import ErrorResponse
from api.schemas import AwareDatetime, Page
from core.audit import audit_page
from core.db import transaction
from core.errors import InvalidInput
from offers.analytics import (
    COUNTERS,
    GROUPS,
    DecisionFacts,
    campaign_lifts,
    funnel,
    redeem_histogram,
)
from offers.campaigns import CampaignCatalog
from offers.feed import FeedCursor, LiveFeed
from offers.funnel_queries import FunnelQueries

router = APIRouter(
    prefix="/v1/manager",
    tags=["manager"],
    dependencies=[require_manager],
    responses={s: {"model": ErrorResponse} for s in (401, 404, 422)},
)
SUPPRESSION_REASONS = ("no_consent", "cap", "quiet_hours", "closed", "shopper_daily_limit")
HEARTBEAT_S = 15.0


class FunnelRowOut(BaseModel):
    key: dict[str, str | None]
    counts: dict[str, int]
    suppressed_by: dict[str, int]


class LiftOut(BaseModel):
    metric: str
    treated: int
    treated_successes: int
    held_out: int
    held_out_successes: int
    treated_rate: float | None
    held_out_rate: float | None
    lift: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float


class FunnelOut(BaseModel):
    campaign_id: str
    group_by: list[str]
    rows: list[FunnelRowOut]
    time_to_redeem: list[dict[str, Any]]
    lift: list[LiftOut]
    interval: str = "Newcombe hybrid score (Wilson) interval for a difference of proportions"


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]


class AuditList(BaseModel):
    items: list[AuditOut]
    page: Page


def _group_by(raw: str | None) -> list[str]:
    parts = [p.strip() for p in (raw or "").split(",") if p.strip()]
    unknown = [p for p in parts if p not in GROUPS]
    if unknown:
        raise InvalidInput(
            f"group_by takes {', '.join(GROUPS)} (comma-separated); unknown: {', '.join(unknown)}"
        )
    return list(dict.fromkeys(parts))


def _facts(
    session: SessionDep,
    runtime: RuntimeDep,
    campaign_id: str,
    since: datetime | None,
    until: datetime | None,
) -> list[DecisionFacts]:
    CampaignCatalog(session).get(campaign_id)  # 404 for an unknown campaign
    return FunnelQueries(session).facts([campaign_id], runtime.clock.now(), since, until)


GroupBy = Annotated[
    str | None, Query(max_length=40, description="comma-separated: variant, store, hour")
]
Since = Annotated[AwareDatetime | None, Query(description="decisions from (inclusive)")]
Until = Annotated[AwareDatetime | None, Query(description="decisions until (exclusive)")]
Confidence = Annotated[float, Query(gt=0.5, lt=1)]


@router.get(
    "/campaigns/{campaign_id}/funnel",
    response_model=FunnelOut,
    summary="Funnel, time to redeem and lift against the holdout",
)
def campaign_funnel(
    campaign_id: str,
    session: SessionDep,
    runtime: RuntimeDep,
    group_by: GroupBy = None,
    since: Since = None,
    until: Until = None,
    confidence: Confidence = 0.95,
) -> FunnelOut:
    by = _group_by(group_by)
    facts = _facts(session, runtime, campaign_id, since, until)
    return FunnelOut(
        campaign_id=campaign_id,
        group_by=by,
        rows=[FunnelRowOut(**asdict(r)) for r in funnel(facts, by)],
        time_to_redeem=redeem_histogram(
            f.redeem_minutes for f in facts if f.redeem_minutes is not None
        ),
        lift=[LiftOut(**asdict(x)) for x in campaign_lifts(facts, confidence)],
    )


@router.get(
    "/campaigns/{campaign_id}/funnel.csv",
    summary="The funnel as CSV (one row per group)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def campaign_funnel_csv(
    campaign_id: str,
    session: SessionDep,
    runtime: RuntimeDep,
    group_by: GroupBy = None,
    since: Since = None,
    until: Until = None,
) -> Response:
    by = _group_by(group_by)
    rows = funnel(_facts(session, runtime, campaign_id, since, until), by)
    keys = ["campaign", *by]
    reasons = sorted({*SUPPRESSION_REASONS, *(r for row in rows for r in row.suppressed_by)})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*keys, *COUNTERS, *(f"suppressed_{r}" for r in reasons)])
    for row in rows:
        writer.writerow(
            [
                *(row.key.get(k) or "" for k in keys),
                *(row.counts[c] for c in COUNTERS),
                *(row.suppressed_by.get(r, 0) for r in reasons),
            ]
        )
    filename = f"funnel-{campaign_id}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/audit", response_model=AuditList, summary="The audit log, newest first")
def audit_log(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    target: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[
        str | None, Query(max_length=60, description="exact, or a prefix ending in '.'")
    ] = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
) -> AuditList:
    rows, total = audit_page(
        session, limit=limit, offset=offset, target=target, action=action, actor=actor
    )
    return AuditList(
        items=[AuditOut.model_validate(r, from_attributes=True) for r in rows],
        page=Page(total=total, limit=limit, offset=offset),
    )


@router.get(
    "/events/stream",
    summary="Live feed of decisions and redemptions (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def event_stream(
    request: Request,
    runtime: RuntimeDep,
    last_event_id: Annotated[str | None, Header()] = None,
    poll_s: Annotated[float, Query(ge=0.05, le=10)] = 1.0,
    max_events: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> StreamingResponse:
    """Decisions (``event: decision``) from the moment of connecting (or after ``Last-Event-ID``)
    and redemptions (``event: redemption``); a comment line keeps the connection alive."""

    def start() -> FeedCursor:
        with transaction(runtime.sessions) as session:
            first = LiveFeed(session).latest_decision_id()
        if last_event_id and last_event_id.isdigit():
            first = min(first, int(last_event_id))
        return FeedCursor(first, runtime.clock.now())

    def poll(cursor: FeedCursor) -> list[tuple[str, str, dict[str, Any]]]:
        with transaction(runtime.sessions) as session:
            return LiveFeed(session).since(cursor)

    cursor = await run_in_threadpool(start)

    async def body() -> AsyncIterator[str]:
        sent, quiet = 0, 0.0
        yield "retry: 3000\n\n"
        while not await request.is_disconnected():
            items = await run_in_threadpool(poll, cursor)
            for kind, ident, data in items:
                ident_line = f"id: {ident}\n" if kind == "decision" else ""
                yield f"event: {kind}\n{ident_line}data: {json.dumps(data)}\n\n"
                sent += 1
                if max_events is not None and sent >= max_events:
                    return
            if not items:
                quiet += poll_s
                if quiet >= HEARTBEAT_S:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
            await asyncio.sleep(poll_s)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
