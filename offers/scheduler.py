"""Timed work on APScheduler 3.11, run by exactly one process: the holder of the leader lease.

APScheduler's job stores must not be shared by several schedulers (its FAQ), so every process
runs a ``BackgroundScheduler`` with an in-memory job store and only the leader puts work in it.
The durable truth is in SQL: the ``deliveries`` outbox (sends and reminders, with their due
instants), ``coupons.expires_at`` and the campaigns' ``starts_at`` / ``ends_at``. A new leader
rebuilds its jobs from those rows, so nothing is lost when a leader dies, even by kill -9:

- ``lease`` (every ``heartbeat_s``, in every process): renew or take the lease. Stand-by
  processes keep trying and take over once the leader's lease has lapsed (``ttl``).
- ``sweep`` (leader, every ``sweep_interval_s``): every unfinished delivery due before the next
  sweep and not yet queued gets a date job at its ``due_at``; campaign boundaries in that window
  get a job at their exact instant.
- ``expiry`` (leader, every ``expiry_interval_s``): coupons past ``expires_at`` go issued ->
  expired (the ``expire_due`` hook) and pending deliveries that can no longer go out in time are
  recorded ``expired_undelivered``.

A delivery is claimed atomically under the lease's fencing token before it is sent
(``DeliveryRepository.claim``), so a deposed leader can no longer claim anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler

from core.db import transaction
from offers.campaign_clock import CampaignClock
from offers.delivery import DeliveryWorker
from offers.lease import LeaderLease
from offers.repository import DeliveryRepository

log = logging.getLogger(__name__)
ExpireDue = Callable[[datetime], int]
BUCKET_S = 0.05
DEFAULT_BATCH = 20  # deliveries claimed together by one job


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{id(object()):x}"


class DeliveryScheduler:
    def __init__(
        self,
        worker: DeliveryWorker,
        lease: LeaderLease,
        *,
        heartbeat_s: float = 5.0,
        sweep_interval_s: float = 2.0,
        expiry_interval_s: float = 5.0,
        threads: int = 8,
        batch_size: int = DEFAULT_BATCH,
        expire_due: ExpireDue | None = None,
        campaigns: CampaignClock | None = None,
    ) -> None:
        self.worker = worker
        self.lease = lease
        self.heartbeat_s = heartbeat_s
        self.sweep_interval_s = sweep_interval_s
        self.expiry_interval_s = expiry_interval_s
        self.expire_due = expire_due
        self.campaigns = campaigns
        self.leading = False
        self._lock = threading.RLock()
        self._queued: set[str] = set()
        self._buckets: dict[int, list[str]] = {}
        self.batch_size = batch_size
        self._scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            # Heartbeat, sweep and expiry run in their own threads: a pool busy with slow sends
            # must never delay the lease renewal, or the leader would lose its lease.
            executors={"default": ThreadPoolExecutor(threads), "control": ThreadPoolExecutor(3)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        worker.reschedule = self.enqueue
        self._periodic: dict[str, tuple[Callable[[], object], float]] = {}

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    @property
    def queued(self) -> int:
        return len(self._queued)

    def start(self) -> None:
        # From now on the worker claims only under this process's lease (fencing).
        self.worker.fence = self.lease.valid_token
        self.worker.lease_name = self.lease.name
        self._scheduler.start()
        self._scheduler.add_job(
            self.tick,
            "interval",
            seconds=self.heartbeat_s,
            id="lease",
            replace_existing=True,
            executor="control",
        )
        self.tick()

    def shutdown(self, wait: bool = True) -> None:
        # Stop leading without calling into APScheduler under our lock: a running job may be
        # waiting for that lock, and APScheduler's shutdown drops the in-memory jobs anyway.
        with self._lock:
            self.leading = False
            self._queued.clear()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
        self.lease.release()

    def tick(self) -> bool:
        """One heartbeat: renew or take the lease, start or stop leading. True while leading."""
        try:
            leadership = self.lease.try_acquire()
        except Exception:  # database unreachable: a leader that cannot renew must stop acting
            log.exception("lease %s could not be renewed or taken", self.lease.name)
            leadership = None
        with self._lock:
            if leadership is not None and not self.leading:
                self._lead()
            elif leadership is None and self.leading:
                self._step_down()
        return leadership is not None

    def _lead(self) -> None:
        self.leading = True
        log.info("%s leads the scheduler (token %s)", self.lease.holder, self.lease.valid_token())
        jobs: list[tuple[str, Callable[[], object], float]] = [
            ("sweep", self.sweep, self.sweep_interval_s),
            ("expiry", self.expire, self.expiry_interval_s),
        ]
        jobs += [(job_id, func, seconds) for job_id, (func, seconds) in self._periodic.items()]
        for job_id, func, seconds in jobs:
            self._scheduler.add_job(
                func,
                "interval",
                seconds=seconds,
                id=job_id,
                replace_existing=True,
                executor="control",
            )
        self.expire()  # catches up coupons and campaign boundaries missed meanwhile
        self.sweep()

    def add_periodic(self, job_id: str, func: Callable[[], object], interval_s: float) -> None:
        """Housekeeping with no durable state of its own (e.g. the ping retention purge): run
        ``func`` every ``interval_s`` seconds while this process leads."""
        with self._lock:
            self._periodic[job_id] = (func, interval_s)
            if self.leading and self._scheduler.running:
                self._scheduler.add_job(
                    func, "interval", seconds=interval_s, id=job_id, replace_existing=True
                )

    def _step_down(self) -> None:
        if not self.leading:
            return
        self.leading = False
        for job in self._scheduler.get_jobs():
            if job.id != "lease":
                with contextlib.suppress(JobLookupError):
                    job.remove()
        self._queued.clear()
        self._buckets.clear()
        log.warning("%s no longer leads the scheduler; jobs dropped", self.lease.holder)

    def enqueue(self, delivery_id: str, delay_s: float = 0.0) -> None:
        """Run the delivery after ``delay_s`` seconds. Only the leader takes jobs; elsewhere the
        outbox row waits for the leader's sweep.

        Deliveries falling due in the same ``BUCKET_S`` share one job (a batch of at most
        ``batch_size``: one claim statement, one load), run at the bucket's start."""
        run_at = datetime.now(UTC) + timedelta(seconds=max(0.0, delay_s))
        bucket = int(run_at.timestamp() / BUCKET_S)
        with self._lock:
            if not self.leading or not self._scheduler.running or delivery_id in self._queued:
                return
            self._queued.add(delivery_id)
            batch = self._buckets.get(bucket)
            if batch is not None and len(batch) < self.batch_size:
                batch.append(delivery_id)
                return
            batch = self._buckets[bucket] = [delivery_id]
        try:
            self._scheduler.add_job(
                self._run_batch,
                "date",
                run_date=datetime.fromtimestamp(bucket * BUCKET_S, UTC),
                args=[batch],
            )
        except SchedulerNotRunningError:  # shutting down: the next leader's sweep has it
            self._queued.discard(delivery_id)

    def _run_batch(self, batch: list[str]) -> None:
        with self._lock:
            for bucket, pending in list(self._buckets.items()):
                if pending is batch:
                    del self._buckets[bucket]
            ids = list(batch)
            self._queued.difference_update(ids)
        try:
            self.worker.deliver_many(ids)
        except Exception:  # the rows stay unfinished; the sweep tries again
            log.exception("delivery batch of %d failed unexpectedly", len(ids))

    def sweep(self) -> int:
        """Queue every unfinished delivery due before the next sweep that has no job yet, and the
        campaign boundaries in that window. Returns how many deliveries were queued."""
        if not self.leading:
            return 0
        now = self.worker.clock.now()
        horizon = now + timedelta(seconds=2 * self.sweep_interval_s)
        with transaction(self.worker.sessions) as session:
            unfinished = DeliveryRepository(session).unfinished(due_before=horizon)
        added = 0
        for delivery_id, due_at in unfinished:
            if delivery_id not in self._queued:
                self.enqueue(delivery_id, (due_at - now).total_seconds())
                added += 1
        if self.campaigns is not None:
            for at in self.campaigns.boundaries(now, horizon):
                delay = max(0.0, (at - now).total_seconds())
                self._scheduler.add_job(
                    self._apply_campaigns,
                    "date",
                    run_date=datetime.now(UTC) + timedelta(seconds=delay),
                    id=f"campaign-boundary:{at.isoformat()}",
                    replace_existing=True,
                    executor="control",
                )
        if added:
            log.info("sweep queued %d delivery job(s)", added)
        return added

    def _apply_campaigns(self) -> None:
        if self.leading and self.campaigns is not None:
            self.campaigns.apply(self.worker.clock.now())

    def expire(self) -> tuple[int, int]:
        """Expire due coupons and drop deliveries that can no longer be made in time; start and
        stop campaigns whose instant passed without its own job (a clock step, a leader that
        took over in between)."""
        if not self.leading:
            return 0, 0
        now = self.worker.clock.now()
        if self.campaigns is not None:
            self.campaigns.apply(now)
        coupons = self.expire_due(now) if self.expire_due is not None else 0
        with transaction(self.worker.sessions) as session:
            dropped = DeliveryRepository(session).drop_expired(now, self.worker.margin)
        if coupons or dropped:
            log.info("expired %d coupon(s), %d delivery(ies) undelivered", coupons, dropped)
        return coupons, dropped
