"""SQL access for stores, fences, pings and fence events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from core.ids import new_id
from geo.domain import CircleFence, Fix, Transition
from geo.models import Fence, FenceEvent, Ping, Store


class StoreRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create_with_circle(
        self,
        *,
        name: str,
        timezone: str,
        external_id: str | None,
        fence: CircleFence,
        now: datetime,
    ) -> tuple[Store, Fence]:
        store = Store(
            id=fence.store_id, name=name, timezone=timezone, external_id=external_id, created_at=now
        )
        row = Fence(
            id=fence.fence_id,
            store_id=store.id,
            kind="circle",
            lon=fence.lon,
            lat=fence.lat,
            radius_m=fence.radius_m,
            version=1,
            updated_at=now,
        )
        self.session.add(store)
        self.session.flush()
        self.session.add(row)
        self.session.flush()
        return store, row

    def get(self, store_id: str) -> Store | None:
        return self.session.get(Store, store_id)

    def by_external_id(self, external_id: str) -> Store | None:
        return self.session.scalar(select(Store).where(Store.external_id == external_id))

    def page(self, *, limit: int, offset: int) -> tuple[list[tuple[Store, list[Fence]]], int]:
        stores = list(
            self.session.scalars(
                select(Store).order_by(Store.created_at, Store.id).limit(limit).offset(offset)
            )
        )
        total = self.session.scalar(select(func.count()).select_from(Store)) or 0
        ids = [s.id for s in stores]
        fences: dict[str, list[Fence]] = {i: [] for i in ids}
        if ids:
            for fence in self.session.scalars(select(Fence).where(Fence.store_id.in_(ids))):
                fences[fence.store_id].append(fence)
        return [(s, fences[s.id]) for s in stores], total

    def existing_ids(self, store_ids: Sequence[str]) -> set[str]:
        if not store_ids:
            return set()
        return set(self.session.scalars(select(Store.id).where(Store.id.in_(list(store_ids)))))

    def all_circle_fences(self) -> list[CircleFence]:
        rows = self.session.execute(
            select(Fence.id, Fence.store_id, Fence.lon, Fence.lat, Fence.radius_m).where(
                Fence.kind == "circle"
            )
        )
        return [CircleFence(r.id, r.store_id, r.lon, r.lat, float(r.radius_m or 0)) for r in rows]


class PingRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add_fixes(self, subject_id: str, fixes: Sequence[Fix], received_at: datetime) -> None:
        if not fixes:
            return
        self.session.execute(
            insert(Ping),
            [
                {
                    "device_id": f.device_id,
                    "subject_id": subject_id,
                    "lon": f.lon,
                    "lat": f.lat,
                    "accuracy_m": f.accuracy_m,
                    "recorded_at": f.recorded_at,
                    "received_at": received_at,
                }
                for f in fixes
            ],
        )

    def add_events(
        self, subject_id: str, transitions: Sequence[Transition], created_at: datetime
    ) -> list[FenceEvent]:
        events = [
            FenceEvent(
                id=new_id("ev"),
                device_id=t.device_id,
                subject_id=subject_id,
                fence_id=t.fence.fence_id,
                store_id=t.fence.store_id,
                kind=t.kind,
                occurred_at=t.occurred_at,
                created_at=created_at,
            )
            for t in transitions
        ]
        self.session.add_all(events)
        self.session.flush()
        return events

    def count_for_device(self, device_id: str) -> int:
        return (
            self.session.scalar(
                select(func.count()).select_from(Ping).where(Ping.device_id == device_id)
            )
            or 0
        )
