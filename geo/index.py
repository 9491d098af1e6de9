"""The live fence index of this process: built from SQL, swapped whole on change.

Every process keeps its own copy. A change bumps a version counter in the hot-state store; each
process compares it at most once per ``check_interval_s`` and rebuilds when it differs, so every
API process sees a fence change within that interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from core.state import HotState
from geo.domain import FenceIndex
from geo.repository import StoreRepository

log = logging.getLogger(__name__)
VERSION_KEY = "fence-index-version"


class LiveFenceIndex:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        state: HotState,
        check_interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._state = state
        self._interval = check_interval_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._index = FenceIndex([], version=-1)
        self._checked_at = float("-inf")

    def current(self) -> FenceIndex:
        """The index to match against, rebuilt first if another process announced a change."""
        if self._monotonic() - self._checked_at >= self._interval:
            self._refresh_if_stale()
        return self._index

    def announce_change(self) -> None:
        """Called after a fence change has committed: bump the shared version and rebuild here."""
        self._state.incr(VERSION_KEY, ttl_s=10 * 365 * 86400)
        self._refresh_if_stale(force=True)

    def _refresh_if_stale(self, force: bool = False) -> None:
        with self._lock:
            self._checked_at = self._monotonic()
            version = self._state.counter(VERSION_KEY)
            if not force and version == self._index.version:
                return
            with self._sessions() as session:
                fences = StoreRepository(session).all_circle_fences()
            index = FenceIndex(fences, version=version)
            self._index = index
            log.info("fence index rebuilt: %d fences, version %d", len(index), version)
