"""Group commit for pings: requests that arrive together share one transaction.

Each ping request used to be its own unit of work: a worker thread, a transaction, a read of the
device, of its consent and of its presence, an insert, a commit. Under many small requests
(one fix each, as phones send them) those fixed costs were most of the work. Here a request
joins the open group and waits; whenever fewer than ``in_flight`` groups are being processed,
everything waiting becomes a group, handed to ``PingIngestor.ingest_many`` in one worker thread.
No timer holds a request back: an idle engine processes a lone request at once, a busy one
gathers what arrived during the previous group, so groups grow with the load.

A group holds at most one request per device (a device's requests are processed in arrival
order, one after the other, never two at once) and at most ``max_fixes`` fixes. Across
processes a device's lock in the hot state does the same: a request whose device another
process is working on (``DeviceBusy``) goes back to wait for a later group, after a short
pause that doubles each time, for up to ``device_wait_s``, then gets its 503; the rest of its
group goes on. When the group's transaction fails as a whole, each of its requests is retried
alone, so one request cannot fail the others; an error that is not about one request (the hot
state unreachable) then reaches each of them.

A group's end (its devices' presence written, their locks freed) is one more hot-state round
trip. When requests are already waiting as a group commits, its requests are answered at once
and its end is handed on: the next group writes it in its own opening, in the same round trip
(``close`` given; ``PingIngestor.ingest_many``'s ``closing``). Its devices stay locked, here
and in the hot state, until then, so a device's next request is still processed after its last
one's presence is written, in the group that writes it. When no group can take the end, it is
written on its own at once.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from anyio import to_thread

from core.ratelimit import RateLimiter, Subjects
from core.state import GroupClose
from offers.flows import DeviceBusy, IngestResult, PingBatch

log = logging.getLogger(__name__)

# PingIngestor.ingest_many: (batches[, closing, defer_close]) -> outcomes
IngestMany = Callable[..., list[IngestResult | Exception]]
CloseGroup = Callable[[GroupClose], None]  # PingIngestor.close
DeferClose = Callable[[GroupClose], bool]


DEVICE_LOCK_WAIT_S = 2.0  # how long a request may wait for its device's lock, then 503
FIRST_PAUSE_S = 0.002  # before a busy device's request is tried again; doubled each time
MAX_PAUSE_S = 0.05


@dataclass(slots=True)
class _Waiting:
    batch: PingBatch
    subjects: Subjects
    future: asyncio.Future[IngestResult]
    deadline: float  # event-loop time after which a busy device means 503
    counted: bool = False  # against the rate limits, once
    pause: float = FIRST_PAUSE_S


class PingGroups:
    def __init__(
        self,
        ingest_many: IngestMany,
        limiter: RateLimiter,
        max_fixes: int = 2000,
        in_flight: int = 1,
        device_wait_s: float = DEVICE_LOCK_WAIT_S,
        close: CloseGroup | None = None,
    ) -> None:
        if max_fixes < 1 or in_flight < 1:
            raise ValueError("max_fixes and in_flight must be at least 1")
        self.ingest_many = ingest_many
        self.close = close  # without it each group is closed before its requests are answered
        self.limiter = limiter
        self.max_fixes = max_fixes
        self.in_flight = in_flight
        self.device_wait_s = device_wait_s
        # A server process runs one event loop; a test client may run one per request. Each
        # loop groups its own requests, so no future is ever touched from another thread.
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )
        self.groups = 0  # groups processed so far, and the requests in them (diagnostics)
        self.grouped = 0

    async def submit(self, batch: PingBatch, subjects: Subjects) -> IngestResult:
        """Process ``batch`` in the next group it fits, counted against its rate limits
        (``subjects``) in that group's opening; its own result or error."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue(self)
        return await queue.submit(batch, subjects)

    def process(
        self,
        group: list[_Waiting],
        closing: GroupClose | None = None,
        defer_close: DeferClose | None = None,
    ) -> list[IngestResult | Exception]:
        """The group's outcomes. Each request is counted against its rate limits once, in the
        group's opening (one round trip with its locks and reads); one back from waiting for
        its device was counted the first time. ``closing`` and ``defer_close``: see the module
        docstring."""
        batches = [
            w.batch
            if w.counted
            else replace(w.batch, count=self.limiter.counts("pings", w.subjects))
            for w in group
        ]
        outcomes = self._ingest(batches, closing, defer_close)
        for w in group:
            w.counted = True
        return outcomes

    def _ingest(
        self,
        batches: list[PingBatch],
        closing: GroupClose | None,
        defer_close: DeferClose | None,
    ) -> list[IngestResult | Exception]:
        if len(batches) == 1:
            return self._alone(batches[0], closing, defer_close)
        try:
            return self._call(batches, closing, defer_close)
        except Exception:
            # The counting may have happened (in the opening) before the failure: the retries
            # do not count again (a failure before it leaves these requests uncounted). The end
            # carried in was written, or is being tried again in the background.
            log.warning("a group of %d ping requests failed; retrying each alone", len(batches))
            return [
                outcome for batch in batches for outcome in self._alone(replace(batch, count=None))
            ]

    def _alone(
        self,
        batch: PingBatch,
        closing: GroupClose | None = None,
        defer_close: DeferClose | None = None,
    ) -> list[IngestResult | Exception]:
        try:
            return self._call([batch], closing, defer_close)
        except Exception as exc:  # the request's own answer: 503 for the hot state, and so on
            return [exc]

    def _call(
        self,
        batches: list[PingBatch],
        closing: GroupClose | None,
        defer_close: DeferClose | None,
    ) -> list[IngestResult | Exception]:
        if closing is None and defer_close is None:
            return self.ingest_many(batches)
        return self.ingest_many(batches, closing, defer_close)


class _Queue:
    """The waiting requests and running groups of one event loop."""

    def __init__(self, owner: PingGroups) -> None:
        self.owner = owner
        self._waiting: list[_Waiting] = []
        self._busy_devices: set[str] = set()
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # The end of the last group, handed on (see the module docstring), and its devices,
        # which stay busy until it is written; only the group that writes it may take them.
        self._ending: GroupClose | None = None
        self._ending_devices: set[str] = set()

    async def submit(self, batch: PingBatch, subjects: Subjects) -> IngestResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestResult] = loop.create_future()
        deadline = loop.time() + self.owner.device_wait_s
        self._waiting.append(_Waiting(batch, subjects, future, deadline))
        self._start_groups()
        return await future

    def _wait_again(self, waiting: _Waiting) -> None:
        if not waiting.future.done():
            self._waiting.append(waiting)
            self._start_groups()

    def _start_groups(self) -> None:
        while self._running < self.owner.in_flight:
            group = self._take_group(self._ending_devices)
            if not group:
                break
            closing, self._ending = self._ending, None
            self._ending_devices = set()
            self._running += 1
            self._start(self._run(group, closing))
        if self._ending is not None:  # no group to write it: on its own, at once
            ending, devices = self._ending, self._ending_devices
            self._ending, self._ending_devices = None, set()
            self._start(self._end(ending, devices))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_group(self, free: set[str]) -> list[_Waiting]:
        """Waiting requests, at most one per device, none of a busy device except those in
        ``free`` (the devices of the end the group will write first)."""
        group: list[_Waiting] = []
        left: list[_Waiting] = []
        devices: set[str] = set()
        fixes = 0
        for item in self._waiting:
            device_id = item.batch.device_id
            size = len(item.batch.fixes)
            fits = not group or fixes + size <= self.owner.max_fixes
            busy = device_id in self._busy_devices and device_id not in free
            if device_id in devices or busy or not fits:
                left.append(item)
                continue
            group.append(item)
            devices.add(device_id)
            fixes += size
        if group:
            self._waiting = left
            self._busy_devices -= free
            self._busy_devices |= devices
        return group

    async def _run(self, group: list[_Waiting], closing: GroupClose | None) -> None:
        handed: list[GroupClose] = []

        def defer_close(end: GroupClose) -> bool:
            # In the group's thread, as it commits: requests already waiting will form the
            # next group, which writes this end in its opening.
            if not self._waiting:
                return False
            handed.append(end)
            return True

        defer = defer_close if self.owner.close is not None else None
        try:
            outcomes = await to_thread.run_sync(self.owner.process, group, closing, defer)
            loop = asyncio.get_running_loop()
            for waiting, outcome in zip(group, outcomes, strict=True):
                if waiting.future.done():  # the client went away; the pings are kept
                    continue
                if (
                    isinstance(outcome, DeviceBusy)
                    and loop.time() + waiting.pause < waiting.deadline
                ):
                    loop.call_later(waiting.pause, self._wait_again, waiting)
                    waiting.pause = min(2 * waiting.pause, MAX_PAUSE_S)
                    continue
                if isinstance(outcome, BaseException):
                    waiting.future.set_exception(outcome)
                else:
                    waiting.future.set_result(outcome)
        except BaseException as exc:  # cancelled at shutdown: no request is left hanging
            for waiting in group:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._running -= 1
            devices = {w.batch.device_id for w in group}
            if handed:  # busy until the end is written
                self._ending, self._ending_devices = handed[0], devices
            else:
                self._busy_devices -= devices
            self.owner.groups += 1
            self.owner.grouped += len(group)
            self._start_groups()

    async def _end(self, end: GroupClose, devices: set[str]) -> None:
        close = self.owner.close
        assert close is not None  # an end is handed on only when there is one
        try:
            await to_thread.run_sync(close, end)
        except Exception:  # the hot state's own failures are retried inside ``close``
            log.exception("writing a ping group's end failed")
        finally:
            self._busy_devices -= devices
            self._start_groups()
