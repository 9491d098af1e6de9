"""The ping path, in one transaction: consent gate -> store fixes -> match -> events -> offers."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from consent.domain import ConsentDecision, ConsentRequired, Purpose
from consent.gate import RECEIPT_COLUMNS, ConsentGate, cache_pairs, receipt_rows
from consent.models import ConsentReceipt, Device
from consent.service import SubjectRegistry
from core.clock import Clock
from core.db import insert_at_once, insert_together, transaction
from core.errors import NotFound, Unauthenticated, Unavailable
from core.ratelimit import Count
from core.state import (
    DEVICE_LOCK_TTL_S,
    GroupClose,
    HotState,
    HotStateUnavailable,
    JSONDict,
    device_lock,
)
from geo.domain import Fix, FixBatch
from geo.hours import is_open
from geo.index import LiveFenceIndex, StoreInfo
from geo.matcher import BatchMatcher
from geo.models import FenceEvent, Ping
from geo.repository import (
    COPY_FROM_ROWS,
    EVENT_COLUMNS,
    PING_COLUMNS,
    PingRepository,
    make_events,
    ping_rows,
)
from geo.tracking import Transition
from offers.decisions import DecisionLog, VariantPicker
from offers.domain import Refusal
from offers.eligibility import IssueLimits
from offers.live_campaigns import LiveCampaigns
from offers.service import IssuedCoupon, OfferIssuer

log = logging.getLogger(__name__)

PRESENCE_TTL_S = 7 * 86400
LATE_CLOSE_FIRST_PAUSE_S = 0.05  # a close the hot state refused: tried again after this,
LATE_CLOSE_MAX_PAUSE_S = 1.0  # doubled each time up to this, until the locks expire
OFFER_TRIGGERS = frozenset({"enter", "dwell", "approaching"})


@dataclass(frozen=True, slots=True)
class PingBatch:
    """One request's fixes, all of one device, as its token presented them (the token's
    subject, when it names one, lets the device's token generation be read with its consent)."""

    device_id: str
    token_version: int
    fixes: Sequence[Fix]
    privacy_signal: str | None = None
    subject_id: str = ""
    count: Count | None = None  # rate-limit counters to count in the group's opening


class DeviceBusy(Unavailable):
    """Another request of the device holds its lock (in another process); try again soon."""


@dataclass(slots=True)
class IngestResult:
    accepted: int
    consent: ConsentDecision
    ignored: dict[str, int] = field(default_factory=dict)
    events: list[FenceEvent] = field(default_factory=list)
    coupons: list[IssuedCoupon] = field(default_factory=list)


def eligibility(transition: Transition, store: StoreInfo | None) -> tuple[bool, str | None]:
    """Whether an event may trigger an offer: the store must be open when the shopper is there
    (for ``approaching``, at the predicted arrival)."""
    if store is None:
        return False, "unknown_store"
    at = transition.occurred_at + timedelta(seconds=transition.details.get("eta_s", 0.0))
    if not is_open(store.opening_hours, store.timezone, at):
        return False, "store_closed"
    return True, None


# An enter or dwell leads to an offer only while it is news: at most this old when the engine
# hears of it (a batch uploaded late, from a phone that was offline, must not send an exploding
# coupon for a visit hours ago).
TRIGGER_MAX_AGE = timedelta(minutes=5)


def timeliness(
    transition: Transition, now: datetime, max_age: timedelta = TRIGGER_MAX_AGE
) -> tuple[bool, str | None]:
    """Whether an event that may trigger an offer is still current: an ``enter`` or ``dwell``
    at most ``max_age`` old, an ``approaching`` whose predicted arrival is still ahead."""
    if transition.kind == "approaching":
        arrival = transition.occurred_at + timedelta(seconds=transition.details.get("eta_s", 0.0))
        return (True, None) if arrival > now else (False, Refusal.ARRIVAL_PASSED.value)
    if transition.kind in OFFER_TRIGGERS and now - transition.occurred_at > max_age:
        return False, Refusal.STALE_TRIGGER.value
    return True, None


def _judge(
    transition: Transition, store: StoreInfo | None, now: datetime, max_age: timedelta
) -> tuple[bool, str | None]:
    eligible, reason = eligibility(transition, store)
    return timeliness(transition, now, max_age) if eligible else (eligible, reason)


class PingIngestor:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        state: HotState,
        fences: LiveFenceIndex,
        clock: Clock,
        matcher: BatchMatcher,
        channels: Collection[str],
        enqueue_delivery: Callable[[str], None],
        issue_limits: IssueLimits | None = None,
        *,
        picker: VariantPicker | None = None,
        holdout_secret: bytes = b"",
        campaigns: LiveCampaigns,
        trigger_max_age: timedelta = TRIGGER_MAX_AGE,
    ) -> None:
        self.issue_limits = issue_limits or IssueLimits()
        self.trigger_max_age = trigger_max_age
        self.campaigns = campaigns  # offer decisions take campaigns and stores from memory
        self.picker = picker or VariantPicker()
        self.holdout_secret = holdout_secret
        self.sessions = sessions
        self.state = state
        self.fences = fences
        self.clock = clock
        self.matcher = matcher
        self.channels = channels
        self.enqueue_delivery = enqueue_delivery

    def ingest_many(
        self,
        batches: Sequence[PingBatch],
        closing: GroupClose | None = None,
        defer_close: Callable[[GroupClose], bool] | None = None,
    ) -> list[IngestResult | Exception]:
        """Process several devices' batches in one transaction (at most one batch per device):
        one read of their locks, consent, token generations and presence, one insert of all the
        fixes, one commit, one write of presence with the locks' release. Each batch gets its
        own outcome, in order: its result, or the error that refused it alone
        (``Unauthenticated``, ``NotFound``, ``ConsentRequired``; the refusal's receipt is kept;
        ``DeviceBusy`` when another request of the device holds its lock, nothing of it done;
        ``RateLimited`` when the request's own rate-limit counters, counted in the group's
        opening, went over a limit: nothing of it done, busy or not).
        An error of the whole transaction (the database or the hot state) is raised and nothing
        is kept. Once the transaction has committed, a hot state that does not answer fails
        nothing: the close (presence, locks) is tried again in the background (``close``).

        Each device's lock is held from before its presence is read until after the commit, so
        two requests of one device never overlap, whichever processes they reach. Nothing here
        waits for a lock: the caller sends a busy device's batch again later.

        ``closing``: an earlier group's end still to be written (``defer_close``), written in
        this group's opening, before its locks are taken (one round trip for both). If the
        opening fails, that end is tried again in the background like any late close.
        ``defer_close``: offered the group's end once its transaction has committed; when it
        returns True the caller owns the end (the devices stay locked until it is written, by
        ``close`` or as the next group's ``closing``) and the group's answers do not wait for
        it. After a failure the group is closed here, whatever ``defer_close`` says."""
        if len({b.device_id for b in batches}) != len(batches):
            raise ValueError("at most one batch per device in one transaction")
        names = [device_lock(b.device_id) for b in batches]
        owner = secrets.token_hex(8)
        subjects = list(dict.fromkeys(b.subject_id for b in batches if b.subject_id))
        expires = time.monotonic() + DEVICE_LOCK_TTL_S  # the locks' expiry, at the latest
        counted = [b.count for b in batches if b.count is not None]
        try:
            opening = self.state.open_group(
                names,
                owner,
                DEVICE_LOCK_TTL_S,
                cache_pairs(subjects),
                [b.device_id for b in batches],
                [key for count in counted for key in count.keys],
                max((count.ttl_s for count in counted), default=0),
                closing,
            )
        except BaseException:
            if closing is not None:  # the script runs whole or not at all: that end is still due
                self._close_in_background(closing)
            raise
        values = iter(opening.counts)
        refused = [
            None if b.count is None else b.count.verdict([next(values) for _ in b.count.keys])
            for b in batches
        ]
        held = opening.held
        held_names = [n for n, h in zip(names, held, strict=True) if h]
        locked = [b for b, h, r in zip(batches, held, refused, strict=True) if h and r is None]
        outcomes: list[IngestResult | Exception] = []
        presence: dict[str, JSONDict] = {}
        done = False
        try:
            if locked:
                read = _GroupRead(subjects, opening.versioned, opening.presence)
                outcomes, presence = self._ingest_locked(locked, read)
            done = True
        finally:  # after a failure: the locks freed, its error (not the close's) raised
            end = GroupClose(held_names, owner, presence, PRESENCE_TTL_S, expires)
            if not (done and held_names and defer_close is not None and defer_close(end)):
                self.close(end)
        results = iter(outcomes)
        answers: list[IngestResult | Exception] = []
        for batch, taken, refusal in zip(batches, held, refused, strict=True):
            if refusal is not None:
                answers.append(refusal)
            elif taken:
                answers.append(next(results))
            else:
                answers.append(
                    DeviceBusy(
                        f"another ping request of device {batch.device_id} is still being "
                        "processed; send this one again"
                    )
                )
        return answers

    def close(self, end: GroupClose) -> None:
        """Write a group's presence and free its locks. The transaction is over (committed or
        not) when this runs, so a hot state that does not answer fails nothing: the close is
        tried again in the background until the locks expire. Until it lands the devices stay
        locked, so no other request reads their presence from before this group."""
        if not end.lock_names:
            return
        try:
            self.state.close_group(end.lock_names, end.owner, end.presence, end.ttl_s)
        except HotStateUnavailable as exc:
            log.warning("closing a ping group failed (%s); trying again in the background", exc)
            self._close_in_background(end)

    def _close_in_background(self, end: GroupClose) -> None:
        threading.Thread(
            target=self._close_later, args=(end,), name="ping-group-close", daemon=True
        ).start()

    def _close_later(self, end: GroupClose) -> None:
        pause = LATE_CLOSE_FIRST_PAUSE_S
        while time.monotonic() + pause < end.expires:
            time.sleep(pause)
            try:
                self.state.close_group(end.lock_names, end.owner, end.presence, end.ttl_s)
            except HotStateUnavailable:
                pause = min(2 * pause, LATE_CLOSE_MAX_PAUSE_S)
                continue
            log.info("a ping group's delayed close landed (%d devices)", len(end.lock_names))
            return
        log.warning(
            "a ping group's close did not land before its locks expired; the presence of %d "
            "devices was not written",
            len(end.presence),
        )

    def _ingest_locked(
        self, batches: Sequence[PingBatch], read: _GroupRead
    ) -> tuple[list[IngestResult | Exception], dict[str, JSONDict]]:
        """The outcomes, and the presence records to write once the transaction committed."""
        now = self.clock.now()
        outcomes: list[IngestResult | Exception] = []
        with transaction(self.sessions) as session:
            gate = ConsentGate(session, self.state)
            gate.absorb(read.subjects, read.cached)
            # A device whose token generation came with its subject's consent needs no query;
            # the others (no subject in the token, a generation the cache does not confirm)
            # are read from the database, which decides.
            unconfirmed = {
                b.device_id
                for b in batches
                if not b.subject_id
                or gate.token_version(b.subject_id, b.device_id) != b.token_version
            }
            rows = SubjectRegistry(session).devices(unconfirmed)
            gate.prefetch([d.subject_id for d in rows.values()])
            admitted: list[tuple[PingBatch, str, ConsentDecision]] = []
            receipts: list[tuple[str, ConsentDecision, dict[str, Any]]] = []
            for batch in batches:
                subject_id = batch.subject_id
                if batch.device_id in unconfirmed:
                    device = rows.get(batch.device_id)
                    if device is None:
                        outcomes.append(NotFound(f"device {batch.device_id} is not registered"))
                        continue
                    if device.token_version != batch.token_version:
                        outcomes.append(
                            Unauthenticated(
                                "device token no longer valid; register the device again"
                            )
                        )
                        continue
                    subject_id = device.subject_id
                consent = gate.check(subject_id, Purpose.LOCATION_TRACKING, None, now)
                if batch.privacy_signal is not None:
                    consent = replace(
                        consent,
                        allowed=False,
                        reason=f"{batch.privacy_signal}: precise location is not processed",
                    )
                receipts.append(
                    (subject_id, consent, {"device_id": batch.device_id, "fixes": len(batch.fixes)})
                )
                if consent.allowed:
                    admitted.append((batch, subject_id, consent))
                    outcomes.append(IngestResult(0, consent))  # filled in below
                else:
                    outcomes.append(ConsentRequired(consent.reason))
            processed, presence = self._process(
                session, gate, receipts, admitted, rows, read.presence, now
            )
            results = iter(processed)
            outcomes = [next(results) if isinstance(o, IngestResult) else o for o in outcomes]
        return outcomes, presence

    def _process(
        self,
        session: Session,
        gate: ConsentGate,
        receipts: Sequence[tuple[str, ConsentDecision, dict[str, Any]]],
        admitted: Sequence[tuple[PingBatch, str, ConsentDecision]],
        rows: dict[str, Device],
        presence: Mapping[str, JSONDict],
        now: datetime,
    ) -> tuple[list[IngestResult], dict[str, JSONDict]]:
        if not admitted:
            gate.add_receipts("ping", receipts, now)
            return [], {}
        snapshot = self.fences.current()
        subject_of = {batch.device_id: subject_id for batch, subject_id, _ in admitted}
        records = {d: presence[d] for d in subject_of if d in presence}
        fixes = [fix for batch, _, _ in admitted for fix in batch.fixes]
        outcome = self.matcher.process(snapshot.index, FixBatch.of(fixes), records, now.timestamp())
        statuses = outcome.statuses
        subjects = [subject_of[f.device_id] for f in fixes]
        status_values = [s.value for s in statuses]
        judged = [
            (
                t,
                *_judge(t, snapshot.stores.get(t.fence.store_id), now, self.trigger_max_age),
            )
            for t in outcome.transitions
        ]
        events = make_events(subject_of, judged, now)
        written = len(fixes) < COPY_FROM_ROWS and _store_in_one(
            session, receipts, (subjects, fixes, status_values), events, now
        )
        if not written:  # one table at a time (SQLite, COPY for many fixes, or a value JSON lacks)
            gate.add_receipts("ping", receipts, now)
            PingRepository(session).add_fixes(subjects, fixes, status_values, now)
            session.add_all(events)
            session.flush()
        own_events: dict[str, list[FenceEvent]] = {device_id: [] for device_id in subject_of}
        for event in events:
            own_events[event.device_id].append(event)
        coupons: dict[str, list[IssuedCoupon]] = {device_id: [] for device_id in subject_of}
        triggers = [e for e in events if e.kind in OFFER_TRIGGERS]
        if triggers:
            self._offer(session, triggers, rows, coupons, snapshot.stores, now)
        visits = DecisionLog(session)
        for device_id, device_events in own_events.items():
            dwells = [e for e in device_events if e.kind == "dwell"]
            visits.record_visits(subject_of[device_id], dwells)
        results = []
        first = 0
        for batch, _, consent in admitted:
            own = statuses[first : first + len(batch.fixes)]
            first += len(batch.fixes)
            ignored = Counter(s.value for s in own if s.value != "used")
            results.append(
                IngestResult(
                    len(own) - sum(ignored.values()),
                    consent,
                    dict(ignored),
                    own_events[batch.device_id],
                    coupons[batch.device_id],
                )
            )
        return results, {d: r for d, r in outcome.records.items() if d in subject_of}

    def _offer(
        self,
        session: Session,
        triggers: Sequence[FenceEvent],
        rows: dict[str, Device],
        coupons: dict[str, list[IssuedCoupon]],
        stores: Mapping[str, StoreInfo],
        now: datetime,
    ) -> None:
        """Offer decisions for the events that may trigger one (their devices read, if the
        group has not read them yet, once a coupon is to go to a push token or an email)."""
        issuer = OfferIssuer(
            session,
            self.state,
            self.channels,
            self.enqueue_delivery,
            self.issue_limits,
            campaigns=self.campaigns,
            stores=stores,
            picker=self.picker,
            holdout_secret=self.holdout_secret,
        )
        issuer.prefetch({e.store_id for e in triggers})
        devices = dict(rows)

        def device_of(device_id: str) -> Device:
            # read when a coupon is issued (most triggers end in a refusal), for the whole group
            if device_id not in devices:
                wanted = {e.device_id for e in triggers if e.eligible} - set(devices)
                devices.update(SubjectRegistry(session).devices(wanted))
            return devices[device_id]

        for event in triggers:
            if event.eligible:
                coupons[event.device_id].extend(
                    issuer.on_trigger(event, partial(device_of, event.device_id), now)
                )
            else:
                issuer.on_ineligible(event, now)


@dataclass(frozen=True, slots=True)
class _GroupRead:
    """What the group's opening read for the transaction: the subjects' cached consent
    projections (``ConsentGate.absorb``) and the devices' presence records."""

    subjects: list[str]
    cached: list[tuple[str | None, int]]
    presence: dict[str, JSONDict]


def _store_in_one(
    session: Session,
    receipts: Sequence[tuple[str, ConsentDecision, dict[str, Any]]],
    fixes: tuple[Sequence[str], Sequence[Fix], Sequence[str]],  # subjects, fixes, statuses
    events: Sequence[FenceEvent],
    now: datetime,
) -> bool:
    """The group's consent receipts, fixes and events in one statement; PostgreSQL only.

    A group that read nothing from the database (consent and devices came from the hot state)
    and has no event that may lead to an offer needs no transaction: the statement is committed
    on its own (``core.db.insert_at_once``), one round trip where a transaction takes four or
    five. Most single-fix groups under load are such. Any other group writes it in its
    transaction (``core.db.insert_together``), before its offer decisions: one round trip and no
    ORM flush where an insert per table took three. False, with nothing sent, when a value
    cannot travel as JSON (a float that is not finite): the caller then writes them one table at
    a time."""
    engine = session.get_bind()
    assert isinstance(engine, Engine)  # sessions are bound to the engine, not a connection
    if engine.dialect.name != "postgresql":
        return False
    rows = [tuple(r[c] for c in RECEIPT_COLUMNS) for r in receipt_rows("ping", receipts, now)]
    event_rows = [tuple(getattr(e, c) for c in EVENT_COLUMNS) for e in events]
    tables = [
        (ConsentReceipt.__tablename__, RECEIPT_COLUMNS, rows),
        (Ping.__tablename__, PING_COLUMNS, ping_rows(*fixes, now)),
        (FenceEvent.__tablename__, EVENT_COLUMNS, event_rows),
    ]
    alone = not session.in_transaction() and not any(e.kind in OFFER_TRIGGERS for e in events)
    try:
        if alone:
            insert_at_once(engine, tables)
        else:
            insert_together(session.connection(), tables)
    except ValueError as exc:  # raised while encoding, before anything was sent
        log.info("a ping group is written one table at a time: %s", exc)
        return False
    return True
