"""Store catalogue: validated creation, upsert by external id (imports) and listing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import EngineError, InvalidInput
from core.ids import new_id
from geo.domain import CircleFence, Fence, PolygonFence
from geo.geometry import PolygonShape
from geo.hours import validate_hours
from geo.models import Fence as FenceRow
from geo.models import Store
from geo.repository import StoreRepository

MAX_DWELL_S = 24 * 3600


class StoreConflict(EngineError):
    code = "store_conflict"


def validate_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown IANA time zone '{name}'", code="invalid_timezone") from exc
    return name


@dataclass(frozen=True, slots=True)
class FenceSpec:
    """A fence as submitted: a circle (lon, lat, radius_m) or a GeoJSON (Multi)Polygon."""

    lon: float | None = None
    lat: float | None = None
    radius_m: float | None = None
    geojson: dict[str, Any] | None = None
    dwell_s: int | None = None

    def build(self, fence_id: str, store_id: str) -> Fence:
        if self.dwell_s is not None and not 0 < self.dwell_s <= MAX_DWELL_S:
            raise InvalidInput(
                f"dwell_s must be between 1 and {MAX_DWELL_S} seconds", code="invalid_fence"
            )
        if self.geojson is not None:
            return PolygonFence(fence_id, store_id, PolygonShape(self.geojson), self.dwell_s)
        if self.lon is None or self.lat is None or self.radius_m is None:
            raise InvalidInput("a circle fence needs lon, lat and radius_m", code="invalid_fence")
        return CircleFence(fence_id, store_id, self.lon, self.lat, self.radius_m, self.dwell_s)


@dataclass(frozen=True, slots=True)
class StoreSpec:
    name: str
    fence: FenceSpec
    external_id: str | None = None
    timezone: str = "UTC"
    opening_hours: dict[str, Any] | None = None


@dataclass(slots=True)
class UpsertReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row number, reason)


def fence_row(fence: Fence, now: datetime, version: int = 1) -> FenceRow:
    lon, lat = fence.anchor
    if isinstance(fence, CircleFence):
        return FenceRow(
            id=fence.fence_id,
            store_id=fence.store_id,
            kind="circle",
            lon=lon,
            lat=lat,
            radius_m=fence.radius_m,
            geojson=None,
            dwell_s=fence.dwell_s,
            version=version,
            updated_at=now,
        )
    return FenceRow(
        id=fence.fence_id,
        store_id=fence.store_id,
        kind="polygon",
        lon=lon,
        lat=lat,
        radius_m=None,
        geojson=fence.shape.geojson,
        dwell_s=fence.dwell_s,
        version=version,
        updated_at=now,
    )


class StoreCatalog:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.repository = StoreRepository(session)

    def create(self, spec: StoreSpec, now: datetime) -> tuple[Store, FenceRow]:
        validate_timezone(spec.timezone)
        hours = validate_hours(spec.opening_hours)
        if spec.external_id is not None and self.repository.by_external_id(spec.external_id):
            raise StoreConflict(f"a store with external_id '{spec.external_id}' already exists")
        store_id = new_id("st")
        fence = spec.fence.build(new_id("fn"), store_id)
        store = Store(
            id=store_id,
            name=spec.name,
            timezone=spec.timezone,
            external_id=spec.external_id,
            opening_hours=hours,
            created_at=now,
        )
        self.session.add(store)
        self.session.flush()
        row = fence_row(fence, now)
        self.session.add(row)
        self.session.flush()
        return store, row

    def upsert(self, specs: Sequence[StoreSpec], now: datetime, first_row: int = 1) -> UpsertReport:
        """Create or update stores by external id; a re-import of the same data changes nothing.

        Every spec must carry an external id. Invalid rows are reported, never half-written. A
        spec without opening hours or a fence dwell (a file has no column for them) leaves an
        existing store's as they are: a manager may have set them since the first import.
        """
        report = UpsertReport()
        ids = [s.external_id for s in specs if s.external_id]
        existing: dict[str, Store] = {}
        fences: dict[str, FenceRow] = {}
        if ids:
            for known in self.session.scalars(select(Store).where(Store.external_id.in_(ids))):
                existing[str(known.external_id)] = known
            store_ids = [s.id for s in existing.values()]
            if store_ids:
                for row in self.session.scalars(
                    select(FenceRow).where(FenceRow.store_id.in_(store_ids))
                ):
                    fences[row.store_id] = row
        new_stores: list[Store] = []
        new_fences: list[FenceRow] = []
        for offset, spec in enumerate(specs):
            number = first_row + offset
            try:
                if not spec.external_id:
                    raise InvalidInput("an imported store needs an external id")
                validate_timezone(spec.timezone)
                hours = validate_hours(spec.opening_hours)
                store: Store | None = existing.get(spec.external_id)
                store_id = store.id if store else new_id("st")
                old = fences.get(store_id)
                fence = spec.fence.build(old.id if old else new_id("fn"), store_id)
            except InvalidInput as exc:
                report.rejected.append((number, exc.message))
                continue
            if store is None:
                store = Store(
                    id=store_id,
                    name=spec.name,
                    timezone=spec.timezone,
                    external_id=spec.external_id,
                    opening_hours=hours,
                    created_at=now,
                )
                existing[spec.external_id] = store
                new_stores.append(store)
                new_fences.append(fence_row(fence, now))
                report.created += 1
                continue
            candidate = fence_row(fence, now, version=(old.version + 1) if old else 1)
            if spec.opening_hours is None:
                hours = store.opening_hours
            if old is not None and candidate.dwell_s is None:
                candidate.dwell_s = old.dwell_s
            same_store = (store.name, store.timezone, store.opening_hours) == (
                spec.name,
                spec.timezone,
                hours,
            )
            same_fence = old is not None and _same_fence(old, candidate)
            if same_store and same_fence:
                report.unchanged += 1
                continue
            store.name, store.timezone, store.opening_hours = spec.name, spec.timezone, hours
            if old is None:
                new_fences.append(candidate)
            elif not same_fence:
                for attr in (
                    "kind",
                    "lon",
                    "lat",
                    "radius_m",
                    "geojson",
                    "dwell_s",
                    "version",
                    "updated_at",
                ):
                    setattr(old, attr, getattr(candidate, attr))
            report.updated += 1
        self.session.add_all(new_stores)
        self.session.flush()
        self.session.add_all(new_fences)
        self.session.flush()
        return report


def _same_fence(a: FenceRow, b: FenceRow) -> bool:
    return (a.kind, a.lon, a.lat, a.radius_m, a.geojson, a.dwell_s) == (
        b.kind,
        b.lon,
        b.lat,
        b.radius_m,
        b.geojson,
        b.dwell_s,
    )
