"""Campaign start and stop at their exact instants.

A campaign is offered only inside its window (``CampaignWindow``); these transitions make the
stored ``status`` say so too, for the manager's lists and for anything reading the table:

- ``active`` with ``ends_at <= now`` -> ``ended``;
- ``scheduled`` with ``starts_at <= now`` (and not yet ended) -> ``active``.

The coupon expiry transition (issued -> expired, releasing budget) is ``offers.expiry``; the
scheduler runs both every few seconds.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from offers.models import Campaign

log = logging.getLogger(__name__)


class CampaignClock:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def boundaries(self, start: datetime, end: datetime) -> list[datetime]:
        """Start and end instants of campaigns that fall in ``[start, end)``."""
        with transaction(self.sessions) as session:
            starts = session.scalars(
                select(Campaign.starts_at).where(
                    Campaign.status == "scheduled",
                    Campaign.starts_at >= start,
                    Campaign.starts_at < end,
                )
            )
            found = {s for s in starts if s is not None}
            ends = session.scalars(
                select(Campaign.ends_at).where(
                    Campaign.status.in_(["active", "scheduled"]),
                    Campaign.ends_at >= start,
                    Campaign.ends_at < end,
                )
            )
            found.update(e for e in ends if e is not None)
        return sorted(found)

    def apply(self, now: datetime) -> tuple[int, int]:
        """Start and stop what is due at ``now``. Returns (started, ended)."""
        with transaction(self.sessions) as session:
            ended = session.execute(
                update(Campaign)
                .where(
                    Campaign.status.in_(["active", "scheduled"]),
                    Campaign.ends_at.is_not(None),
                    Campaign.ends_at <= now,
                )
                .values(status="ended")
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            started = session.execute(
                update(Campaign)
                .where(
                    Campaign.status == "scheduled",
                    Campaign.starts_at.is_not(None),
                    Campaign.starts_at <= now,
                    or_(Campaign.ends_at.is_(None), and_(Campaign.ends_at > now)),
                )
                .values(status="active")
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        if started or ended:
            log.info("campaigns started: %d, ended: %d", started, ended)
        return int(started), int(ended)
