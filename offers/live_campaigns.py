"""The active campaigns, their stores and variants, kept in memory for offer decisions.

An offer decision used to read the store's campaigns and their variants from SQL (three
statements, with the store's row a fourth) in the ping group's transaction, and every request
grouped with the trigger waited for them. Here each process keeps what those statements
returned, for all active campaigns at once, as detached rows nobody changes.

Freshness: a transaction that changes a campaign, a variant or a campaign's stores (through
the ORM, or by an ``UPDATE``/``DELETE`` statement on them) bumps a version counter in the hot
state when it commits (``watch``). A decision reads that counter (one hot-state read, where
there were four SQL statements) and reloads when it moved, so every process decides on a change
as soon as it has committed, as when the campaigns were read in the decision's transaction.
Statements that only move a campaign's budget counters (``COUNTERS_ONLY``) are not changes:
the budget is taken by its own conditional ``UPDATE`` at each issue. Should the bump itself
fail (the hot state unreachable just then), a copy is never used for longer than
``max_age_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from core.state import HotState
from offers.models import Campaign, CampaignStore, Offer
from offers.repository import COUNTERS_ONLY, CampaignRepository, campaigns_reaching

log = logging.getLogger(__name__)
VERSION_KEY = "campaigns-version"
VERSION_TTL_S = 10 * 365 * 86400
MAX_AGE_S = 5.0
_WATCHED = (Campaign, Offer, CampaignStore)
_MARK = "campaigns_changed"
_COUNTERS_OPTION = next(iter(COUNTERS_ONLY))


@dataclass(frozen=True, slots=True)
class CampaignSet:
    """Every active campaign (oldest first) with the ids of the stores it names and its
    variants, as read at one version of the counter."""

    version: int
    loaded_at: float  # time.monotonic()
    campaigns: tuple[tuple[Campaign, frozenset[str], tuple[Offer, ...]], ...]

    def for_stores(
        self, stores: Mapping[str, Sequence[str]]
    ) -> dict[str, list[tuple[Campaign, list[Offer]]]]:
        """For each store (id -> its tags), the active campaigns that reach it, oldest first,
        each with its variants."""
        return campaigns_reaching(stores, self.campaigns)


class LiveCampaigns:
    def __init__(
        self, sessions: sessionmaker[Session], state: HotState, max_age_s: float = MAX_AGE_S
    ) -> None:
        self._sessions = sessions
        self._state = state
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._current: CampaignSet | None = None
        self.loads = 0  # how many times the campaigns were read from SQL (diagnostics, tests)

    def current(self) -> CampaignSet:
        """The campaigns as of the latest committed change (raises ``HotStateUnavailable``
        when the version cannot be read: the caller's unit of work fails, nothing is decided
        on a copy that may be out of date)."""
        version = self._state.counter(VERSION_KEY)
        found = self._current
        if found is not None and self._fresh(found, version):
            return found
        with self._lock:  # one load at a time; the others take what it read
            found = self._current
            if found is None or not self._fresh(found, version):
                found = self._current = self._load(version)
        return found

    def _fresh(self, found: CampaignSet, version: int) -> bool:
        return found.version == version and time.monotonic() - found.loaded_at < self.max_age_s

    def _load(self, version: int) -> CampaignSet:
        loaded_at = time.monotonic()
        with self._sessions() as session:  # closed: the rows come out detached, as loaded
            rows = CampaignRepository(session).live()
        self.loads += 1
        return CampaignSet(
            version,
            loaded_at,
            tuple((c, frozenset(stores), tuple(offers)) for c, stores, offers in rows),
        )

    def announce_change(self) -> None:
        """After a change to campaigns has committed: tell every process, and drop this one's
        copy at once."""
        self._current = None
        try:
            self._state.incr(VERSION_KEY, VERSION_TTL_S)
        except Exception as exc:  # the change has committed; the others reload within max_age_s
            log.warning("could not announce a campaign change (%s)", exc)


def watch(sessions: sessionmaker[Session], live: LiveCampaigns) -> None:
    """Announce, once per committed transaction of ``sessions``, any change to campaigns,
    variants or campaign stores: ORM objects flushed, or statements run on those tables other
    than budget-counter updates."""

    def after_flush(session: Session, _context: Any) -> None:
        touched = (*session.new, *session.dirty, *session.deleted)
        if any(isinstance(row, _WATCHED) for row in touched):
            session.info[_MARK] = True

    def do_orm_execute(state: Any) -> None:
        if not (state.is_update or state.is_delete or state.is_insert):
            return
        if state.execution_options.get(_COUNTERS_OPTION):
            return
        mapper = state.bind_mapper
        if mapper is not None and issubclass(mapper.class_, _WATCHED):
            state.session.info[_MARK] = True

    def after_commit(session: Session) -> None:
        if session.info.pop(_MARK, False):
            live.announce_change()

    def after_rollback(session: Session) -> None:
        session.info.pop(_MARK, None)

    event.listen(sessions, "after_flush", after_flush)
    event.listen(sessions, "do_orm_execute", do_orm_execute)
    event.listen(sessions, "after_commit", after_commit)
    event.listen(sessions, "after_rollback", after_rollback)
