"""Opening hours in a store's own IANA time zone (DST-correct through zoneinfo).

Shape: ``{"mon": [["08:00", "20:00"]], "sat": [["10:00", "02:00"]], ...}``. A range whose close is
not after its open runs past midnight into the next day; "24:00" closes at midnight. A day that is
absent is closed; ``None`` hours mean always open.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from core.errors import InvalidInput

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")

OpeningHours = dict[str, list[list[str]]]


class InvalidOpeningHours(InvalidInput):
    code = "invalid_opening_hours"


def _minutes(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def validate_hours(hours: Any) -> OpeningHours | None:
    if hours is None:
        return None
    if not isinstance(hours, dict):
        raise InvalidOpeningHours("opening_hours must be an object keyed by day (mon..sun)")
    for day, ranges in hours.items():
        if day not in DAYS:
            raise InvalidOpeningHours(f"unknown day {day!r}; use one of {', '.join(DAYS)}")
        if not isinstance(ranges, list):
            raise InvalidOpeningHours(f"{day}: a list of [open, close] pairs is expected")
        for pair in ranges:
            if (
                not isinstance(pair, list | tuple)
                or len(pair) != 2
                or not all(isinstance(v, str) and _HHMM.match(v) for v in pair)
            ):
                raise InvalidOpeningHours(f'{day}: {pair!r} is not an ["HH:MM", "HH:MM"] pair')
            if pair[0] == "24:00" or pair[0] == pair[1]:
                raise InvalidOpeningHours(f"{day}: {pair!r} is an empty range")
    return {day: [list(p) for p in ranges] for day, ranges in hours.items()}


def is_open(hours: OpeningHours | None, timezone: str, instant: datetime) -> bool:
    """Whether the store is open at ``instant`` (aware), read in the store's local time."""
    if hours is None:
        return True
    local = instant.astimezone(ZoneInfo(timezone))
    now_min = local.hour * 60 + local.minute + local.second / 60
    today = DAYS[local.weekday()]
    yesterday = DAYS[(local.weekday() - 1) % 7]
    for opens, closes in hours.get(today, []):
        start, end = _minutes(opens), _minutes(closes)
        if end <= start:
            end = 24 * 60  # the part of an overnight range before midnight
        if start <= now_min < end:
            return True
    for opens, closes in hours.get(yesterday, []):
        start, end = _minutes(opens), _minutes(closes)
        if end <= start and now_min < end:  # the part after midnight of yesterday's range
            return True
    return False


def local_time(instant: datetime, timezone: str) -> time:
    return instant.astimezone(ZoneInfo(timezone)).time()


__all__ = ["DAYS", "InvalidOpeningHours", "OpeningHours", "is_open", "local_time", "validate_hours"]
