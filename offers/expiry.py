"""The expiry transition: issued -> expired once a coupon's time (plus the till's grace) is over,
releasing its reserved liability from the campaign's budget exactly once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock
from core.db import transaction
from offers.repository import CampaignBudget, CouponRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    expired: int
    released: int  # liability given back, minor currency units


def expire_in(
    session: Session, cutoff: datetime, limit: int, coupon_id: str | None = None
) -> ExpiryResult:
    """Expire due coupons inside the caller's transaction and release their liability."""
    count, released = CouponRepository(session).expire_due(cutoff, limit, coupon_id)
    budget = CampaignBudget(session)
    for campaign_id, amount in released.items():
        budget.release(campaign_id, amount)
    return ExpiryResult(count, sum(released.values()))


class CouponExpiry:
    """``expire_due(now)`` runs from the scheduler's periodic sweep (it may run in several
    processes at once: the conditional UPDATE lets each coupon expire, and release, once)."""

    def __init__(
        self, sessions: sessionmaker[Session], clock: Clock, grace: timedelta, batch: int = 1000
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.grace = grace
        self.batch = batch

    def expire_due(self, now: datetime | None = None) -> ExpiryResult:
        cutoff = (now or self.clock.now()) - self.grace
        expired = released = 0
        while True:
            with transaction(self.sessions) as session:
                step = expire_in(session, cutoff, self.batch)
            expired += step.expired
            released += step.released
            if step.expired < self.batch:
                break
        if expired:
            log.info("expired %d coupon(s), released liability %d", expired, released)
        return ExpiryResult(expired, released)

    def expire_one(self, coupon_id: str, now: datetime | None = None) -> bool:
        """Expire one coupon if it is due (for a per-coupon job); True if it moved now."""
        cutoff = (now or self.clock.now()) - self.grace
        with transaction(self.sessions) as session:
            return expire_in(session, cutoff, 1, coupon_id).expired == 1
