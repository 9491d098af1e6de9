"""The live fence index of this process: built from SQL off the hot path, swapped whole.

Every process keeps its own copy. A change bumps a version counter in the hot-state store; a
background thread compares it every ``check_interval_s`` and, when it differs, builds a new index
and swaps the reference, so requests never wait for a rebuild and every API process sees a fence
change within that interval (plus the build time).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.state import HotState
from geo.domain import FenceIndex
from geo.hours import OpeningHours
from geo.models import Store
from geo.repository import StoreRepository

log = logging.getLogger(__name__)
VERSION_KEY = "fence-index-version"


@dataclass(frozen=True, slots=True)
class StoreInfo:
    name: str
    timezone: str
    opening_hours: OpeningHours | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    index: FenceIndex
    stores: dict[str, StoreInfo] = field(default_factory=dict)


class LiveFenceIndex:
    def __init__(
        self, sessions: sessionmaker[Session], state: HotState, check_interval_s: float = 0.5
    ) -> None:
        self._sessions = sessions
        self._state = state
        self._interval = check_interval_s
        self._build_lock = threading.Lock()
        self._snapshot = Snapshot(FenceIndex([], version=-1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> Snapshot:
        """The snapshot to match against. Reading it never blocks on a rebuild."""
        return self._snapshot

    def start(self) -> None:
        """Build the first index now, then watch for changes in the background."""
        self.refresh(force=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="fence-index", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def announce_change(self) -> None:
        """After a fence change has committed: tell every process, and rebuild here at once."""
        self._state.incr(VERSION_KEY, ttl_s=10 * 365 * 86400)
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> bool:
        """Rebuild if the shared version moved (or ``force``). Returns whether it rebuilt."""
        with self._build_lock:
            version = self._state.counter(VERSION_KEY)
            if not force and version == self._snapshot.index.version:
                return False
            with self._sessions() as session:
                fences = StoreRepository(session).all_fences()
                stores = {
                    s.id: StoreInfo(s.name, s.timezone, s.opening_hours, tuple(s.tags or ()))
                    for s in session.scalars(select(Store))
                }
            self._snapshot = Snapshot(FenceIndex(fences, version=version), stores)
            log.info("fence index rebuilt: %d fences, version %d", len(fences), version)
            return True

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.refresh()
            except Exception:  # keep serving the last good index; try again next tick
                log.exception("fence index refresh failed")
