"""Mobile SDK: the shopper's own offer preferences (categories, quiet hours, daily maximum)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from api.deps import DeviceDep, RuntimeDep, SessionDep
from api.errors import ErrorResponse
from api.schemas import Strict
from consent.preferences import (
    MAX_CATEGORIES,
    OfferPreferences,
    PreferencesRepository,
    check_timezone,
    parse_hhmm,
)

router = APIRouter(
    prefix="/v1/sdk",
    tags=["sdk"],
    responses={s: {"model": ErrorResponse} for s in (401, 422, 503)},
)


def _hhmm(value: str) -> str:
    parse_hhmm(value)
    return value


Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
TimeOfDay = Annotated[
    str, Field(examples=["22:00"], description="HH:MM, 00:00 to 23:59"), AfterValidator(_hhmm)
]
TimeZoneName = Annotated[
    str,
    Field(min_length=1, max_length=64, examples=["Europe/Helsinki"]),
    AfterValidator(check_timezone),
]


class QuietHours(Strict):
    """No offers from ``start`` to ``end`` in the shopper's time zone; 22:00-07:00 spans
    midnight. An offer that would come in quiet hours is dropped, never sent later."""

    start: TimeOfDay
    end: TimeOfDay

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours need an end different from their start")
        return self


EXAMPLE: dict[str, Any] = {
    "categories": ["coffee", "books"],
    "quiet_hours": {"start": "21:00", "end": "08:00"},
    "timezone": "Europe/Helsinki",
    "max_offers_per_day": 3,
}


class PreferencesIn(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    categories: list[Category] | None = Field(
        default=None,
        max_length=MAX_CATEGORIES,
        description="offer categories the shopper wants; null for every category. A campaign "
        "with a category reaches only shoppers who chose it (or chose none); one without a "
        "category reaches everyone.",
        examples=[["coffee", "books"]],
    )
    quiet_hours: QuietHours | None = None
    timezone: TimeZoneName = "UTC"
    max_offers_per_day: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="offers per day of the shopper's calendar, across campaigns; null: no limit",
    )

    @model_validator(mode="after")
    def _unique_categories(self) -> PreferencesIn:
        if self.categories is not None:
            self.categories = list(dict.fromkeys(self.categories))
        return self


class PreferencesOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{**EXAMPLE, "updated_at": "2026-11-23T09:00:00Z"}]}
    )

    categories: list[str] | None
    quiet_hours: QuietHours | None
    timezone: str
    max_offers_per_day: int | None
    updated_at: datetime | None


def _out(prefs: OfferPreferences, updated_at: datetime | None) -> PreferencesOut:
    quiet = None
    if prefs.quiet_start is not None and prefs.quiet_end is not None:
        quiet = QuietHours(start=f"{prefs.quiet_start:%H:%M}", end=f"{prefs.quiet_end:%H:%M}")
    return PreferencesOut(
        categories=list(prefs.categories) if prefs.categories is not None else None,
        quiet_hours=quiet,
        timezone=prefs.timezone,
        max_offers_per_day=prefs.max_offers_per_day,
        updated_at=updated_at,
    )


@router.get(
    "/preferences",
    response_model=PreferencesOut,
    summary="The device owner's offer preferences (defaults when none were set)",
)
def get_preferences(device: DeviceDep, session: SessionDep) -> PreferencesOut:
    repository = PreferencesRepository(session)
    row = repository.row(device.subject_id)
    return _out(repository.get(device.subject_id), row.updated_at if row else None)


@router.put(
    "/preferences",
    response_model=PreferencesOut,
    summary="Replace the device owner's offer preferences",
)
def put_preferences(
    body: PreferencesIn, device: DeviceDep, session: SessionDep, runtime: RuntimeDep
) -> PreferencesOut:
    prefs = OfferPreferences(
        categories=tuple(body.categories) if body.categories is not None else None,
        quiet_start=parse_hhmm(body.quiet_hours.start) if body.quiet_hours else None,
        quiet_end=parse_hhmm(body.quiet_hours.end) if body.quiet_hours else None,
        timezone=body.timezone,
        max_offers_per_day=body.max_offers_per_day,
    )
    row = PreferencesRepository(session).save(device.subject_id, prefs, runtime.clock.now())
    return _out(prefs, row.updated_at)
