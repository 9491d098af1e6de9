"""Campaign manager: stores with fences and tags, consent notices (campaigns: campaigns.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import ActorDep, RuntimeDep, SessionDep, require_manager
from api.errors import ErrorResponse
from api.schemas import (
    FenceOut,
    NoticeIn,
    NoticeOut,
    Page,
    StoreIn,
    StoreList,
    StoreOut,
    StorePatch,
)
from consent.service import NoticeRegistry
from core.audit import audit
from core.db import on_commit
from geo.models import Fence, Store
from geo.repository import StoreRepository
from geo.service import FenceSpec, StoreCatalog, StoreSpec
from geo.store_edits import StoreEditor

ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": ErrorResponse} for s in (401, 404, 409, 422)
}
router = APIRouter(
    prefix="/v1/manager", tags=["manager"], dependencies=[require_manager], responses=ERRORS
)

Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def _store_out(store: Store, fences: list[Fence]) -> StoreOut:
    return StoreOut(
        opening_hours=store.opening_hours,
        tags=list(store.tags or []),
        id=store.id,
        name=store.name,
        external_id=store.external_id,
        timezone=store.timezone,
        fences=[
            FenceOut(
                id=f.id,
                kind=f.kind,
                lon=f.lon,
                lat=f.lat,
                radius_m=f.radius_m,
                geometry=f.geojson,
                dwell_s=f.dwell_s,
            )
            for f in fences
        ],
    )


@router.post(
    "/stores",
    status_code=201,
    response_model=StoreOut,
    summary="Create a store with a circular fence",
)
def create_store(
    body: StoreIn, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> StoreOut:
    fence = FenceSpec(
        lon=body.fence.lon,
        lat=body.fence.lat,
        radius_m=body.fence.radius_m,
        geojson=body.fence.geometry,
        dwell_s=body.fence.dwell_s,
    )
    spec = StoreSpec(
        name=body.name,
        fence=fence,
        external_id=body.external_id,
        timezone=body.timezone,
        opening_hours=body.opening_hours,
    )
    now = runtime.clock.now()
    store, fence_row = StoreCatalog(session).create(spec, now)
    store.tags = sorted(set(body.tags))
    StoreEditor(session, actor).created(store, now)
    on_commit(session, runtime.fences.announce_change)
    return _store_out(store, [fence_row])


@router.patch("/stores/{store_id}", response_model=StoreOut, summary="Change name, tags, hours")
def update_store(
    store_id: str, body: StorePatch, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> StoreOut:
    changes = body.model_dump(exclude_unset=True)
    store = StoreEditor(session, actor).update(store_id, changes, runtime.clock.now())
    if changes:  # name, tags and hours all live in the fence index's store facts
        on_commit(session, runtime.fences.announce_change)
    fences = list(session.scalars(select(Fence).where(Fence.store_id == store_id)))
    return _store_out(store, fences)


@router.get("/stores", response_model=StoreList, summary="List stores (filterable)")
def list_stores(
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    q: Annotated[str | None, Query(max_length=200, description="name contains")] = None,
    tag: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=40)] = None,
) -> StoreList:
    rows, total = StoreRepository(session).page(limit=limit, offset=offset, q=q, tag=tag)
    return StoreList(
        items=[_store_out(s, f) for s, f in rows],
        page=Page(total=total, limit=limit, offset=offset),
    )


@router.post(
    "/notices",
    status_code=201,
    response_model=NoticeOut,
    summary="Publish a consent notice version (immutable once published)",
)
def publish_notice(
    body: NoticeIn, session: SessionDep, runtime: RuntimeDep, actor: ActorDep
) -> NoticeOut:
    notice = NoticeRegistry(session).publish(
        purpose=body.purpose,
        version=body.version,
        language=body.language,
        text=body.text,
        now=runtime.clock.now(),
    )
    out = NoticeOut.model_validate(notice, from_attributes=True)
    audit(
        session,
        actor=actor,
        action="notice.publish",
        at=runtime.clock.now(),
        target=out.id,
        details={"purpose": out.purpose, "version": out.version, "language": out.language},
    )
    return out
