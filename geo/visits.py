"""One device's presence over a batch of used fixes, fence by fence, with no object per fix.

``geo.tracking.fence_step`` runs fix by fix over every fence the device holds. Each fence's state
depends only on that fence's own distances, so here every fence involved is scanned on its own:
entry at the first fix deep enough inside (accuracy considered), exit with hysteresis, dwell and
re-entry, over plain lists, jumping over runs of fixes that cannot change anything.

Signed distances are computed only where they can matter: the tree query already gives them for
fixes inside a fence; a fix outside a polygon farther from its anchor than the polygon's reach
plus the exit buffer is clearly outside without an exact distance; only fixes near an edge get
one. The result is what ``fence_step`` gives, transitions in the same order.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geo.domain import FenceIndex
from geo.geometry import FloatArray
from geo.tracking import TrackingRules, Transition

FIRST_WINDOW = 8  # fixes scanned past a fence's last hit before looking further (exit is near)
_INSIDE, _BAND, _OUT = 0, 1, 2
_KIND_ORDER = {"dwell": 0, "enter": 1, "exit": 2}


@dataclass(slots=True)
class _Track:
    fence: int  # position in the index
    state: dict[str, Any] | None  # as in the record's "in", None while outside
    key: tuple[int, int]  # order among the device's fences: (entry fix, rank at that fix)
    start: int  # first fix (position among the used fixes) still to scan
    stop: int  # one past the last fix of this round
    hits: list[int]  # fixes where the fence may be entered (inside, accuracy considered)
    fence_id_entered: bool = False


@dataclass(slots=True)
class _HitOrder:
    """Every (fix, fence) hit as two lists, fixes in time order, fences in index order
    (ascending) within a fix."""

    ks: list[int]
    fs: list[int]

    def rank(self, k: int, f: int) -> int:
        """The hit's place among the hits of its fix (it orders fences entered at one fix)."""
        first = bisect_left(self.ks, k)
        return self.fs.index(f, first) - first


@dataclass(slots=True)
class DeviceFixes:
    """The used fixes of one device in event-time order, as columns."""

    times: list[float]
    t: FloatArray  # the same times as an array
    lons: FloatArray
    lats: FloatArray
    margins: FloatArray  # entry_accuracy_weight * accuracy


def scan_fences(
    device_id: str,
    index: FenceIndex,
    fixes: DeviceFixes,
    inside: Mapping[str, Mapping[str, Any]],
    hit_k: NDArray[np.intp],
    hit_f: NDArray[np.intp],
    hit_deep: NDArray[np.bool_],
    rules: TrackingRules,
) -> tuple[dict[str, dict[str, Any]], list[Transition], set[str]]:
    """Fold the fixes into the device's fences. ``hit_*``: every (fix, fence) pair with the fix
    inside the fence and whether it is deep enough inside to enter (accuracy considered),
    fixes in time order and, per fix, fences in index order (ascending; ``FenceIndex.candidates``
    gives them so).
    Returns the fences the device is in afterwards (in ``fence_step``'s order), the
    transitions, and the fences entered (whose pending announcement ends)."""
    n = len(fixes.times)
    order = _HitOrder(hit_k.tolist(), hit_f.tolist())
    last_hit = dict(zip(order.fs, order.ks, strict=True))  # in time order: the last
    # The pairs deep enough to enter, fence by fence (fixes in time order within a fence).
    chosen = hit_deep.nonzero()[0]
    chosen_f = hit_f[chosen]
    by_f = chosen_f.argsort(kind="stable")
    chosen_f = chosen_f[by_f]
    ks = hit_k[chosen][by_f].tolist()
    cuts = [0, *((chosen_f[1:] != chosen_f[:-1]).nonzero()[0] + 1).tolist(), len(ks)]
    firsts = chosen_f[cuts[:-1]].tolist() if ks else []
    by_fence = {f: ks[a:b] for f, a, b in zip(firsts, cuts, cuts[1:], strict=False)}
    tracks: list[_Track] = []
    for position, (fence_id, state) in enumerate(inside.items()):
        f = index.position.get(fence_id)
        if f is not None:  # a removed fence is forgotten without an event
            tracks.append(_Track(f, dict(state), (-1, position), 0, 0, by_fence.pop(f, [])))
    held_count = len(tracks)
    for f, ks in by_fence.items():
        tracks.append(_Track(f, None, (0, 0), ks[0], 0, ks))
    for track in tracks:
        track.stop = min(n, last_hit.get(track.fence, -1) + 1 + FIRST_WINDOW)
        track.stop = max(track.stop, min(n, track.start + FIRST_WINDOW))
    events: list[tuple[int, int, tuple[int, int], Transition]] = []
    entered: set[str] = set()
    pending = [t for t in tracks if t.start < t.stop]
    window = FIRST_WINDOW
    vector = held_count == 0  # fences entered in this batch: the whole scan as array operations
    while pending:  # a round: classify every pending track's fixes at once, then scan each
        cls, pk, offsets, lengths = _classify(index, fixes, pending, hit_k, hit_f, rules)
        done = (
            _vector_scan(
                device_id, index, pending, cls, pk, offsets, lengths, fixes, order, rules, n
            )
            if vector
            else [None] * len(pending)
        )
        vector = False
        more = []
        window *= 2
        starts = offsets.tolist()
        ends = (offsets + lengths).tolist()
        for track, a, b, result in zip(pending, starts, ends, done, strict=True):
            if result is not None:
                events.extend(result)
                if track.fence_id_entered:
                    entered.add(index.fences[track.fence].fence_id)
                continue
            _scan(
                device_id,
                index,
                track,
                cls[a:b].tolist(),
                fixes.times,
                order,
                rules,
                events,
                entered,
            )
            if track.state is not None and track.stop < n:  # still inside: look further
                track.start, track.stop = track.stop, min(n, track.stop + window)
                more.append(track)
        pending = more
    events.sort(key=itemgetter(0, 1, 2))
    held = sorted((t for t in tracks if t.state is not None), key=lambda t: t.key)
    fences = index.fences
    return (
        {fences[t.fence].fence_id: t.state for t in held if t.state is not None},
        [e[3] for e in events],
        entered,
    )


def _vector_scan(
    device_id: str,
    index: FenceIndex,
    tracks: list[_Track],
    cls: NDArray[np.intp],
    pk: NDArray[np.intp],
    offsets: NDArray[np.intp],
    lengths: NDArray[np.intp],
    fixes: DeviceFixes,
    order: _HitOrder,
    rules: TrackingRules,
    n: int,
) -> list[list[tuple[int, int, tuple[int, int], Transition]] | None]:
    """Tracks entered at their first fix, scanned together: exit (outside fixes counted since
    the last inside one, and the time since the first of them), dwell, the state at the end.
    None for a track this cannot settle (entered again, or still inside where the window
    ends): the scan fix by fix does those."""
    size = cls.size
    idx = np.arange(size)
    tid = np.arange(len(tracks)).repeat(lengths)
    start = np.zeros(size, dtype=bool)
    start[offsets] = True
    t = fixes.t[pk]
    out = (cls == _OUT) & ~start
    count = out.cumsum()
    last_reset = np.maximum.accumulate(np.where((cls == _INSIDE) | start, idx, 0))
    since = count - count[last_reset]
    next_out = np.empty(size + 1, dtype=idx.dtype)
    next_out[:size] = np.minimum.accumulate(np.where(out, idx, size)[::-1])[::-1]
    next_out[size] = size
    first_out = np.minimum(next_out[last_reset + 1], size - 1)
    o = t[first_out]
    leaves = out & ((since >= rules.exit_confirm_fixes) | (t - o >= rules.exit_confirm_s))
    exits = np.minimum.reduceat(np.where(leaves, idx, size), offsets)
    entry_t = t[offsets]
    fences_idx = np.fromiter((tr.fence for tr in tracks), dtype=np.intp, count=len(tracks))
    dwell = index.dwell_thresholds(fences_idx, rules.default_dwell_s)
    dwells = np.minimum.reduceat(
        np.where(
            (cls == _INSIDE) & ~start & (idx < exits[tid]) & (t - entry_t[tid] >= dwell[tid]),
            idx,
            size,
        ),
        offsets,
    )
    results: list[list[tuple[int, int, tuple[int, int], Transition]] | None] = []
    firsts = pk[offsets].tolist()
    lasts = (offsets + lengths - 1).tolist()
    for track, x, d, q, k0, s0 in zip(
        tracks, exits.tolist(), dwells.tolist(), lasts, firsts, entry_t.tolist(), strict=True
    ):
        k_exit = int(pk[x]) if x < size else n
        if (x == size and track.stop < n) or (
            x < size and bisect_left(track.hits, k_exit + 1) < len(track.hits)
        ):
            results.append(None)
            continue
        fence = index.fences[track.fence]
        track.key = (k0, order.rank(k0, track.fence))
        found = [(k0, _KIND_ORDER["enter"], track.key, _event(device_id, fence, "enter", s0, {}))]
        if d < size:
            at = float(t[d])
            details = {"dwell_s": round(at - s0, 1)}
            found.append(
                (
                    int(pk[d]),
                    _KIND_ORDER["dwell"],
                    track.key,
                    _event(device_id, fence, "dwell", at, details),
                )
            )
        if x < size:
            details = {"duration_s": round(max(0.0, float(o[x]) - s0), 1)}
            found.append(
                (
                    k_exit,
                    _KIND_ORDER["exit"],
                    track.key,
                    _event(device_id, fence, "exit", float(t[x]), details),
                )
            )
            track.state = None
        else:
            waiting = int(since[q])
            track.state = {
                "s": s0,
                "d": int(d < size),
                "o": float(o[q]) if waiting else None,
                "n": waiting,
            }
        track.fence_id_entered = True
        results.append(found)
    return results


def _classify(
    index: FenceIndex,
    fixes: DeviceFixes,
    tracks: list[_Track],
    hit_k: NDArray[np.intp],
    hit_f: NDArray[np.intp],
    rules: TrackingRules,
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """Each track's fixes start..stop, flat (fix positions, and where each track's run begins
    and how long it is):
    inside (0), in the exit band (1), clearly outside (2). A fix is inside a fence exactly when
    the pair is a hit; outside ones are told apart by ``FenceIndex.farther_than``."""
    spans = np.array([(t.start, t.stop, t.fence) for t in tracks], dtype=np.intp)
    lengths = spans[:, 1] - spans[:, 0]
    ends = lengths.cumsum()
    offsets = ends - lengths
    pk = np.arange(int(ends[-1]), dtype=np.intp) - (offsets - spans[:, 0]).repeat(lengths)
    pf = spans[:, 2].repeat(lengths)
    cls = np.full(pk.size, _INSIDE, dtype=np.intp)
    if hit_k.size:
        count = len(index)
        hit_keys = hit_k.astype(np.int64) * count + hit_f  # ascending: see scan_fences
        pair_keys = pk.astype(np.int64) * count + pf
        j = hit_keys.searchsorted(pair_keys)
        j[j == hit_keys.size] = hit_keys.size - 1
        rest = (hit_keys[j] != pair_keys).nonzero()[0]
    else:
        rest = np.arange(pk.size)
    if rest.size:
        rk, rf = pk[rest], pf[rest]
        bound = rules.exit_buffer_m + fixes.margins[rk]
        far = index.farther_than(fixes.lons[rk], fixes.lats[rk], rf, bound)
        cls[rest] = np.where(far, _OUT, _BAND)
    return cls, pk, offsets, lengths


def _scan(
    device_id: str,
    index: FenceIndex,
    track: _Track,
    cls: list[int],
    times: list[float],
    order: _HitOrder,
    rules: TrackingRules,
    events: list[tuple[int, int, tuple[int, int], Transition]],
    entered: set[str],
) -> None:
    """``fence_step`` for one fence over fixes ``track.start .. track.stop``."""
    fence = index.fences[track.fence]
    dwell = fence.dwell_s if fence.dwell_s is not None else rules.default_dwell_s
    base, size = track.start, len(cls)
    moves = [i for i, c in enumerate(cls) if c != _INSIDE]
    hits = track.hits
    state = track.state
    i = 0
    while i < size:
        if state is None:  # outside: the next fix deep enough inside enters
            j = bisect_left(hits, base + i)
            if j == len(hits) or hits[j] >= base + size:
                break
            k = hits[j]
            state = {"s": times[k], "d": 0, "o": None, "n": 0}
            track.key = (k, order.rank(k, track.fence))
            entered.add(fence.fence_id)
            track.fence_id_entered = True
            events.append(
                (
                    k,
                    _KIND_ORDER["enter"],
                    track.key,
                    _event(device_id, fence, "enter", times[k], {}),
                )
            )
            i = k - base + 1
            continue
        j = bisect_left(moves, i)
        nxt = moves[j] if j < len(moves) else size
        if nxt > i:  # fixes i..nxt-1 are inside: the exit count restarts; dwell may fire
            state["o"], state["n"] = None, 0
            if dwell is not None and not state.get("d"):
                at = _first_at_least(times, base + i, base + nxt, state["s"], dwell)
                if at is not None:
                    state["d"] = 1
                    details = {"dwell_s": round(times[at] - state["s"], 1)}
                    events.append(
                        (
                            at,
                            _KIND_ORDER["dwell"],
                            track.key,
                            _event(device_id, fence, "dwell", times[at], details),
                        )
                    )
            if nxt == size:
                break
        k, t = base + nxt, times[base + nxt]
        if cls[nxt] == _OUT:
            state["o"] = state["o"] if state.get("o") is not None else t
            state["n"] = int(state.get("n", 0)) + 1
            if state["n"] >= rules.exit_confirm_fixes or t - state["o"] >= rules.exit_confirm_s:
                details = {"duration_s": round(max(0.0, state["o"] - state["s"]), 1)}
                events.append(
                    (
                        k,
                        _KIND_ORDER["exit"],
                        track.key,
                        _event(device_id, fence, "exit", t, details),
                    )
                )
                state = None
        i = nxt + 1
    track.state = state


def _first_at_least(times: list[float], lo: int, hi: int, start: float, dwell: float) -> int | None:
    """The first k in lo..hi-1 with times[k] - start >= dwell (times ascending), else None."""
    k = bisect_left(times, start + dwell, lo, hi)
    while k > lo and times[k - 1] - start >= dwell:  # rounding of start + dwell
        k -= 1
    while k < hi and times[k] - start < dwell:
        k += 1
    return k if k < hi else None


def _event(
    device_id: str, fence: Any, kind: str, t: float, details: dict[str, float]
) -> Transition:
    return Transition(device_id, fence, kind, datetime.fromtimestamp(t, UTC), details)
