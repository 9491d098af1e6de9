"""Per-device presence as a pure state machine: ordering, duplicates, accuracy, jumps, mock
locations, hysteresis at the edge, dwell. No I/O; the record is plain JSON for the hot state.

Record (times are UNIX seconds):
    w    last used fix time (the ordering watermark)
    p    [lon, lat, t] last used position;  q  the one before it (for derived heading)
    j    [lon, lat, t] a pending jump: an implausible fix kept to see if the next agrees
    in   {fence_id: {"s": entered, "d": dwell fired (0/1), "o": first clearly-outside time,
         "n": clearly-outside fixes in a row}}
    ap   {fence_id: t until which an `approaching` is not repeated}
    ids  recent ping ids (bounded)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from geo.domain import Fence, Fix
from geo.geometry import EARTH_RADIUS_M

Record = dict[str, Any]


class FixStatus(StrEnum):
    USED = "used"
    STALE = "stale"  # not newer than the last used fix
    DUPLICATE = "duplicate"  # a ping id already seen
    INACCURATE = "inaccurate"  # accuracy radius above the limit
    JUMP = "jump"  # implied speed impossible
    MOCK = "mock"  # the SDK says the OS reported a mock location
    FUTURE = "future"  # stamped later than the server's clock allows (a phone clock ahead)


@dataclass(frozen=True, slots=True)
class TrackingRules:
    max_accuracy_m: float = 100.0
    entry_accuracy_weight: float = 0.5  # entry needs signed distance + weight * accuracy <= 0
    exit_buffer_m: float = 20.0  # exit needs signed distance > buffer + weight * accuracy ...
    exit_confirm_fixes: int = 2  # ... for this many fixes in a row ...
    exit_confirm_s: float = 60.0  # ... or for this long
    max_speed_mps: float = 300 / 3.6
    default_dwell_s: int | None = 120
    remembered_ping_ids: int = 64
    # A fix stamped more than this after the server's clock is not used: as the device's
    # watermark it would make every correctly stamped fix after it stale.
    max_clock_ahead_s: float = 120.0


@dataclass(slots=True)  # not frozen: built by the dozen per batch, and frozen costs 4x to build
class Transition:
    device_id: str
    fence: Fence
    kind: str  # enter | exit | dwell | approaching
    occurred_at: datetime
    details: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class TrackResult:
    record: Record
    transitions: list[Transition]
    statuses: list[FixStatus]  # one per input fix, in input order


def _ts(instant: datetime) -> float:
    return instant.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def fix_order(fix: Fix) -> tuple[object, ...]:
    """Event-time order; ties broken by accuracy then content, so arrival order never matters."""
    accuracy = float("inf") if fix.accuracy_m is None else fix.accuracy_m
    return (fix.recorded_at, accuracy, fix.lon, fix.lat, fix.ping_id or "")


def _distance(a: Sequence[float], lon: float, lat: float) -> float:
    """Great-circle metres between two points (scalar: this runs once per fix)."""
    p1, p2 = math.radians(a[1]), math.radians(lat)
    h = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon - a[0]) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, max(0.0, h))))


def _plausible(reference: Sequence[float] | None, fix: Fix, t: float, max_speed: float) -> bool:
    if reference is None:
        return True
    elapsed = t - reference[2]
    distance = _distance(reference, fix.lon, fix.lat)
    return distance <= max_speed * max(elapsed, 1.0)


def track_device(
    device_id: str,
    record: Mapping[str, Any] | None,
    fixes: Sequence[Fix],
    per_fix: Sequence[Mapping[str, float]],
    fences: Mapping[str, Fence],
    rules: TrackingRules,
    not_after: float | None = None,
) -> TrackResult:
    """Fold one device's fixes into its record. A fix stamped after ``not_after`` (UNIX
    seconds; the server's clock plus ``rules.max_clock_ahead_s``) is not used.

    ``per_fix[i][fence_id]`` is the signed distance (metres, negative inside) of ``fixes[i]`` to
    the fence, given for every fence the fix is inside and for every fence the device is (or
    becomes) inside during the batch; a missing fence means "outside, beyond any band".
    """
    rec: Record = dict(record or {})
    rec["ap"] = dict(rec.get("ap", {}))  # never change the caller's record
    inside: dict[str, dict[str, Any]] = {k: dict(v) for k, v in rec.get("in", {}).items()}
    ids: list[str] = list(rec.get("ids", []))
    statuses: list[FixStatus] = [FixStatus.USED] * len(fixes)
    transitions: list[Transition] = []
    for i in sorted(range(len(fixes)), key=lambda k: fix_order(fixes[k])):
        fix = fixes[i]
        t = _ts(fix.recorded_at)
        if fix.ping_id is not None and fix.ping_id in ids:
            statuses[i] = FixStatus.DUPLICATE
            continue
        if fix.ping_id is not None:
            ids.append(fix.ping_id)
        if fix.mock:
            statuses[i] = FixStatus.MOCK
            continue
        if not_after is not None and t > not_after:
            statuses[i] = FixStatus.FUTURE
            continue
        watermark = rec.get("w")
        if watermark is not None and t <= watermark:
            statuses[i] = FixStatus.STALE
            continue
        accuracy = fix.accuracy_m or 0.0
        if accuracy > rules.max_accuracy_m:
            statuses[i] = FixStatus.INACCURATE
            continue
        if not _plausible(rec.get("p"), fix, t, rules.max_speed_mps):
            pending = rec.get("j")
            if pending is None or not _plausible(pending, fix, t, rules.max_speed_mps):
                rec["j"] = [fix.lon, fix.lat, t]
                statuses[i] = FixStatus.JUMP
                continue
            # Two fixes agree on the new place: the device really moved (a flight, a train).
        rec.pop("j", None)
        rec["w"] = t
        if "p" in rec:
            rec["q"] = rec["p"]
        rec["p"] = [fix.lon, fix.lat, t]
        transitions.extend(
            fence_step(device_id, inside, t, accuracy, per_fix[i], fences, rules, rec)
        )
    rec["in"] = inside
    rec["ids"] = ids[-rules.remembered_ping_ids :]
    return TrackResult(rec, transitions, statuses)


def fence_step(
    device_id: str,
    inside: dict[str, dict[str, Any]],
    t: float,
    accuracy: float,
    distances: Mapping[str, float],
    fences: Mapping[str, Fence],
    rules: TrackingRules,
    record: Record,
) -> list[Transition]:
    """One used fix against the fences: exits (with hysteresis), dwells, entries.

    ``inside`` is changed in place. ``distances`` holds the fix's signed distance to every fence
    it is inside and to every fence in ``inside``; a missing one is far outside.
    """
    margin = rules.entry_accuracy_weight * accuracy
    transitions: list[Transition] = []
    for fence_id, state in list(inside.items()):
        fence = fences.get(fence_id)
        if fence is None:  # the fence was removed: forget it without an event
            del inside[fence_id]
            continue
        s = distances.get(fence_id, _FAR)
        if s <= 0.0:
            state["o"], state["n"] = None, 0
        elif s > rules.exit_buffer_m + margin:
            state["o"] = state["o"] if state.get("o") is not None else t
            state["n"] = int(state.get("n", 0)) + 1
            if state["n"] >= rules.exit_confirm_fixes or t - state["o"] >= rules.exit_confirm_s:
                duration = max(0.0, state["o"] - state["s"])
                transitions.append(
                    Transition(device_id, fence, "exit", _dt(t), {"duration_s": round(duration, 1)})
                )
                del inside[fence_id]
                continue
        dwell = fence.dwell_s if fence.dwell_s is not None else rules.default_dwell_s
        if dwell is not None and not state.get("d") and t - state["s"] >= dwell and s <= 0.0:
            state["d"] = 1
            transitions.append(
                Transition(device_id, fence, "dwell", _dt(t), {"dwell_s": round(t - state["s"], 1)})
            )
    for fence_id, s in distances.items():
        if fence_id in inside or s + margin > 0.0:
            continue
        fence = fences.get(fence_id)
        if fence is None:
            continue
        inside[fence_id] = {"s": t, "d": 0, "o": None, "n": 0}
        record.get("ap", {}).pop(fence_id, None)
        transitions.append(Transition(device_id, fence, "enter", _dt(t)))
    return transitions


_FAR = float("inf")
