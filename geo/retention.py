"""Raw pings are kept only for the retention period, then purged.

Fence events, coupons and the consent ledger stay; only the raw location fixes go. The purge runs
in batches, each its own short transaction, so it never holds a long lock on the ping table
while the API writes to it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock
from core.db import transaction
from geo.repository import PingRepository

log = logging.getLogger(__name__)


class PingRetention:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        keep: timedelta,
        *,
        batch: int = 5000,
    ) -> None:
        if keep <= timedelta(0):
            raise ValueError("the retention period must be positive")
        self.sessions = sessions
        self.clock = clock
        self.keep = keep
        self.batch = batch

    def purge(self) -> int:
        """Delete every raw ping received more than ``keep`` ago; returns how many went."""
        cutoff = self.clock.now() - self.keep
        total = 0
        while True:
            with transaction(self.sessions) as session:
                removed = PingRepository(session).purge_received_before(cutoff, self.batch)
            total += removed
            if removed < self.batch:
                break
        if total:
            log.info("purged %d raw ping(s) received before %s", total, cutoff.isoformat())
        return total
