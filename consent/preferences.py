"""What the shopper chose about offers: categories, quiet hours in their own time zone, and a
daily maximum. Owned by the shopper (``/v1/sdk/preferences``), honoured by ``offers/``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from consent.models import Preferences

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
MAX_CATEGORIES = 50


def parse_hhmm(value: str) -> time:
    """``"22:30"`` -> 22:30; anything else raises ``ValueError`` with the reason."""
    match = _HHMM.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00 to 23:59)")
    return time(int(match.group(1)), int(match.group(2)))


def check_timezone(name: str) -> str:
    """An IANA time zone name such as ``Europe/Helsinki``; raises ``ValueError`` otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r} (e.g. Europe/Helsinki)") from exc
    return name


@dataclass(frozen=True, slots=True)
class OfferPreferences:
    categories: tuple[str, ...] | None = None  # None: every category

    def wants_category(self, category: str | None) -> bool:
        """A general offer (no category) goes to everyone; a categorised one only to shoppers
        who chose no categories or chose that one."""
        return category is None or self.categories is None or category in self.categories

    quiet_start: time | None = None
    quiet_end: time | None = None
    timezone: str = "UTC"
    max_offers_per_day: int | None = None

    def quiet_at(self, now: datetime) -> bool:
        """Whether ``now`` falls in the quiet hours, read in the shopper's time zone. A range
        whose end is not after its start runs past midnight (22:00-07:00)."""
        if self.quiet_start is None or self.quiet_end is None:
            return False
        local = now.astimezone(ZoneInfo(self.timezone)).time()
        if self.quiet_start < self.quiet_end:
            return self.quiet_start <= local < self.quiet_end
        return local >= self.quiet_start or local < self.quiet_end

    def local_day(self, now: datetime) -> date:
        return now.astimezone(ZoneInfo(self.timezone)).date()

    def day_bounds(self, day: date) -> tuple[datetime, datetime]:
        """The instants a day of the shopper's calendar starts and ends (23 or 25 hours apart
        on a daylight-saving change)."""
        zone = ZoneInfo(self.timezone)
        start = datetime.combine(day, time(0), zone)
        return start, datetime.combine(day + timedelta(days=1), time(0), zone)

    def describe_quiet(self) -> str | None:
        if self.quiet_start is None or self.quiet_end is None:
            return None
        return f"{self.quiet_start:%H:%M}-{self.quiet_end:%H:%M} {self.timezone}"


DEFAULT_PREFERENCES = OfferPreferences()


class PreferencesRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def row(self, subject_id: str) -> Preferences | None:
        return self.session.get(Preferences, subject_id)

    def get(self, subject_id: str) -> OfferPreferences:
        row = self.row(subject_id)
        if row is None:
            return DEFAULT_PREFERENCES
        return OfferPreferences(
            categories=tuple(row.categories) if row.categories is not None else None,
            quiet_start=parse_hhmm(row.quiet_start) if row.quiet_start else None,
            quiet_end=parse_hhmm(row.quiet_end) if row.quiet_end else None,
            timezone=row.timezone,
            max_offers_per_day=row.max_offers_per_day,
        )

    def save(self, subject_id: str, prefs: OfferPreferences, now: datetime) -> Preferences:
        """Replace the shopper's preferences as a whole."""
        row = self.row(subject_id)
        if row is None:
            row = Preferences(subject_id=subject_id)
            self.session.add(row)
        row.categories = list(prefs.categories) if prefs.categories is not None else None
        row.quiet_start = f"{prefs.quiet_start:%H:%M}" if prefs.quiet_start is not None else None
        row.quiet_end = f"{prefs.quiet_end:%H:%M}" if prefs.quiet_end is not None else None
        row.timezone = prefs.timezone
        row.max_offers_per_day = prefs.max_offers_per_day
        row.updated_at = now
        self.session.flush()
        return row

    def delete(self, subject_id: str) -> bool:
        row = self.row(subject_id)
        if row is None:
            return False
        self.session.delete(row)
        self.session.flush()
        return True
