"""The scheduler's leader lease: a row in SQL, so it works the same on SQLite and PostgreSQL.

APScheduler's job stores must not be shared by several schedulers, so exactly one process runs
the timed work at a time: the holder of the lease. It renews the lease with a heartbeat; when it
stops renewing (crash, kill -9, network partition), any other process takes the lease once
``expires_at`` has passed. Each change of holder increments ``token``, a fencing token: work
claimed under an older token belongs to a deposed leader (``DeliveryRepository.claim``).

Both operations are one conditional ``UPDATE`` each (the database serialises them), so two
candidates never both win. The instants come from the injected clock: run the processes with
synchronised clocks and a TTL well above any skew between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock
from core.db import transaction
from offers.models import SchedulerLease

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Leadership:
    holder: str
    token: int
    expires_at: datetime


class LeaderLease:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        holder: str,
        *,
        name: str = "scheduler",
        ttl: timedelta = timedelta(seconds=15),
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.holder = holder
        self.name = name
        self.ttl = ttl
        self.current: Leadership | None = None

    def try_acquire(self) -> Leadership | None:
        """Renew the lease if held, else take it if free or lapsed. None: someone else leads."""
        now = self.clock.now()
        held = self.current
        if held is not None and self._renew(held, now):
            self.current = Leadership(held.holder, held.token, now + self.ttl)
            return self.current
        if held is not None:
            log.warning("lease %s lost by %s (token %d)", self.name, self.holder, held.token)
        self.current = self._take(now)
        if self.current is not None:
            log.info("lease %s taken by %s (token %d)", self.name, self.holder, self.current.token)
        return self.current

    def valid_token(self) -> int | None:
        """The fencing token while this process believes it leads (lease not yet lapsed)."""
        held = self.current
        if held is None or held.expires_at <= self.clock.now():
            return None
        return held.token

    def release(self) -> None:
        """Give the lease up at once (an orderly shutdown), so a stand-by need not wait the TTL."""
        held, self.current = self.current, None
        if held is None:
            return
        now = self.clock.now()
        with transaction(self.sessions) as session:
            session.execute(
                update(SchedulerLease)
                .where(
                    SchedulerLease.name == self.name,
                    SchedulerLease.holder == self.holder,
                    SchedulerLease.token == held.token,
                )
                .values(expires_at=now, updated_at=now)
            )

    def _renew(self, held: Leadership, now: datetime) -> bool:
        with transaction(self.sessions) as session:
            result = session.execute(
                update(SchedulerLease)
                .where(
                    SchedulerLease.name == self.name,
                    SchedulerLease.holder == self.holder,
                    SchedulerLease.token == held.token,
                    SchedulerLease.expires_at > now,
                )
                .values(expires_at=now + self.ttl, updated_at=now)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def _take(self, now: datetime) -> Leadership | None:
        with transaction(self.sessions) as session:
            result = session.execute(
                update(SchedulerLease)
                .where(SchedulerLease.name == self.name, SchedulerLease.expires_at <= now)
                .values(
                    holder=self.holder,
                    token=SchedulerLease.token + 1,
                    expires_at=now + self.ttl,
                    updated_at=now,
                )
            )
            if result.rowcount:  # type: ignore[attr-defined]
                row = session.get(SchedulerLease, self.name)
                assert row is not None
                return Leadership(row.holder, row.token, row.expires_at)
            if session.get(SchedulerLease, self.name) is not None:
                return None  # held by someone else and still live
        try:  # the very first candidate creates the row
            with transaction(self.sessions) as session:
                session.add(
                    SchedulerLease(
                        name=self.name,
                        holder=self.holder,
                        token=1,
                        expires_at=now + self.ttl,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            return None  # another candidate created it first
        return Leadership(self.holder, 1, now + self.ttl)
