"""Timed work on APScheduler 3.11 with its job store in the engine's own database.

Durable truth is the ``deliveries`` outbox; APScheduler jobs are how this process acts on it at
the right time. On start, and then every ``sweep_interval_s``, unfinished deliveries that have no
job (written by another API process, or lost in a crash) get one again, so a restart loses no send.
A delivery is claimed atomically before it is sent, so two runs never send it twice.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from core.db import transaction
from offers.delivery import DeliveryWorker
from offers.repository import DeliveryRepository

log = logging.getLogger(__name__)

# Jobs in a persistent store name their function by reference, so the function is module-level
# and finds its worker here. One entry per running scheduler (normally exactly one per process).
_WORKERS: dict[str, DeliveryWorker] = {}


def run_delivery_job(worker_name: str, delivery_id: str) -> None:
    worker = _WORKERS.get(worker_name)
    if worker is None:
        log.warning(
            "no delivery worker %r in this process; delivery %s left for the sweep",
            worker_name,
            delivery_id,
        )
        return
    worker.deliver(delivery_id)


def run_sweep_job(worker_name: str) -> None:
    scheduler = _SCHEDULERS.get(worker_name)
    if scheduler is not None:
        scheduler.sweep()


_SCHEDULERS: dict[str, DeliveryScheduler] = {}


class DeliveryScheduler:
    def __init__(
        self,
        engine: Engine,
        worker: DeliveryWorker,
        *,
        name: str = "default",
        sweep_interval_s: float = 5.0,
        threads: int = 4,
    ) -> None:
        self.name = name
        self.worker = worker
        self.sweep_interval_s = sweep_interval_s
        self._scheduler = BackgroundScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(engine=engine, tablename="apscheduler_jobs"),
                "local": MemoryJobStore(),  # housekeeping, re-added by every start
            },
            executors={"default": ThreadPoolExecutor(threads)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        worker.reschedule = self.enqueue
        self._periodic: dict[str, tuple[Callable[[], object], float]] = {}

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        _WORKERS[self.name] = self.worker
        _SCHEDULERS[self.name] = self
        self._scheduler.start()
        self._scheduler.add_job(
            run_sweep_job,
            "interval",
            seconds=self.sweep_interval_s,
            args=[self.name],
            id=f"sweep:{self.name}",
            replace_existing=True,
        )
        for job_id, (func, interval_s) in self._periodic.items():
            self._add_periodic(job_id, func, interval_s)
        self.sweep()

    def add_periodic(self, job_id: str, func: Callable[[], object], interval_s: float) -> None:
        """Housekeeping with no durable state of its own (e.g. the ping retention purge): run
        ``func`` every ``interval_s`` seconds while this scheduler runs."""
        self._periodic[job_id] = (func, interval_s)
        if self._scheduler.running:
            self._add_periodic(job_id, func, interval_s)

    def _add_periodic(self, job_id: str, func: Callable[[], object], interval_s: float) -> None:
        self._scheduler.add_job(
            func,
            "interval",
            seconds=interval_s,
            id=job_id,
            jobstore="local",
            replace_existing=True,
        )

    def shutdown(self, wait: bool = True) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
        _WORKERS.pop(self.name, None)
        _SCHEDULERS.pop(self.name, None)

    def enqueue(self, delivery_id: str, delay_s: float = 0.0) -> None:
        """Run the delivery after ``delay_s`` seconds. Only a running scheduler takes jobs; other
        processes leave the outbox row for the running scheduler's sweep."""
        if not self._scheduler.running:
            return
        run_at = datetime.now(UTC) + timedelta(seconds=max(0.0, delay_s))
        # Each attempt is its own job: a retry queued from inside a running job must not share
        # that job's id, or APScheduler removes the retry when the running job finishes.
        try:
            self._scheduler.add_job(
                run_delivery_job,
                "date",
                run_date=run_at,
                args=[self.name, delivery_id],
                id=f"delivery:{delivery_id}:{secrets.token_hex(4)}",
            )
        except SchedulerNotRunningError:  # shutting down: the sweep of the next start has it
            log.info("scheduler stopped; delivery %s left for the next sweep", delivery_id)

    def sweep(self) -> int:
        """Give every unfinished delivery without a job one. Returns how many were added."""
        with transaction(self.worker.sessions) as session:
            unfinished = DeliveryRepository(session).unfinished()
        now = self.worker.clock.now()
        queued = {
            job.args[1] for job in self._scheduler.get_jobs() if job.id.startswith("delivery:")
        }
        added = 0
        for delivery_id, due_at in unfinished:
            if delivery_id not in queued:
                self.enqueue(delivery_id, (due_at - now).total_seconds())
                added += 1
        if added:
            log.info("sweep queued %d delivery job(s)", added)
        return added
