"""Store catalogue: validated creation and listing of stores with fences."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from core.errors import EngineError, InvalidInput
from core.ids import new_id
from geo.domain import CircleFence
from geo.models import Fence, Store
from geo.repository import StoreRepository


class StoreConflict(EngineError):
    code = "store_conflict"


def validate_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown IANA time zone '{name}'", code="invalid_timezone") from exc
    return name


class StoreCatalog:
    def __init__(self, session: Session) -> None:
        self.repository = StoreRepository(session)

    def create_circle_store(
        self,
        *,
        name: str,
        timezone: str,
        external_id: str | None,
        lon: float,
        lat: float,
        radius_m: float,
        now: datetime,
    ) -> tuple[Store, Fence]:
        validate_timezone(timezone)
        if external_id is not None and self.repository.by_external_id(external_id) is not None:
            raise StoreConflict(f"a store with external_id '{external_id}' already exists")
        fence = CircleFence(new_id("fn"), new_id("st"), lon, lat, radius_m)
        return self.repository.create_with_circle(
            name=name, timezone=timezone, external_id=external_id, fence=fence, now=now
        )
