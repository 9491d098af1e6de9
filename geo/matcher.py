"""A whole batch of fixes (any number of devices) through matching, tracking and prediction.

Pure: records in, records out. The spatial work is vectorised over the batch (one tree query for
all fixes, one for all corridors). A device that is in no fence and whose fixes touch none takes a
vectorised path (ordering, duplicates, accuracy, jumps as array operations); only devices at a
fence go through the per-fix state machine in ``geo.tracking``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geo.domain import FenceIndex, FixBatch, pair_lengths_m, step_lengths_m
from geo.geometry import FloatArray
from geo.prediction import (
    Motion,
    PredictionRules,
    Reported,
    Travel,
    motion_of,
    odometer,
    predict,
)
from geo.tracking import (
    FixStatus,
    Record,
    TrackingRules,
    Transition,
    fix_order,
    track_device,
)
from geo.visits import DeviceFixes, scan_fences

STATUS_CODES = list(FixStatus)
_TRANSITION_ORDER = attrgetter("occurred_at", "device_id", "kind")
USED = STATUS_CODES.index(FixStatus.USED)
_DUPLICATE = STATUS_CODES.index(FixStatus.DUPLICATE)
_MOCK = STATUS_CODES.index(FixStatus.MOCK)
_STALE = STATUS_CODES.index(FixStatus.STALE)
_INACCURATE = STATUS_CODES.index(FixStatus.INACCURATE)
_FUTURE = STATUS_CODES.index(FixStatus.FUTURE)

# A device's fixes after ordering and validity: positions in event-time order, their status
# codes, the ping ids to remember, the steps between used fixes. None: a jump to judge.
Checked = tuple[NDArray[np.intp], NDArray[np.int8], list[str], Travel | None] | None


@dataclass(slots=True)
class BatchOutcome:
    records: dict[str, Record]
    transitions: list[Transition]
    status_codes: NDArray[np.int8]  # index into STATUS_CODES, one per input fix
    predicted: int = 0

    @property
    def statuses(self) -> list[FixStatus]:
        return [STATUS_CODES[c] for c in self.status_codes.tolist()]


class BatchMatcher:
    def __init__(self, tracking: TrackingRules, prediction: PredictionRules | None) -> None:
        self.tracking = tracking
        self.prediction = prediction

    def process(
        self,
        index: FenceIndex,
        batch: FixBatch,
        records: Mapping[str, Record],
        now: float | None = None,
    ) -> BatchOutcome:
        """``now``: the server's clock (UNIX seconds); a fix stamped more than
        ``max_clock_ahead_s`` after it is not used (status ``future``). None: no such check."""
        not_after = None if now is None else now + self.tracking.max_clock_ahead_s
        margins = self.tracking.entry_accuracy_weight * np.fmax(batch.accuracy, 0.0)  # nan: 0
        point_idx, fence_idx, deep = index.candidates(batch.lon, batch.lat, margins)
        codes = np.empty(len(batch), dtype=np.int8)
        codes.fill(USED)
        transitions: list[Transition] = []
        new_records: dict[str, Record] = {}
        motions: list[Motion] = []
        skips: list[set[str]] = []
        segments = _segments(batch.device_ids)
        singles = self._single_fixes(batch, segments, records, not_after)
        for device_id, positions in segments:
            record = records.get(device_id) or {}
            if device_id in singles:
                checked = singles[device_id]
            else:
                checked = (
                    None if "j" in record else self._validity(batch, positions, record, not_after)
                )
            travel: Travel | None = None
            if checked is None:  # a jump to judge: the per-fix state machine decides
                new_record, seg_codes, seg_transitions = self._scalar(
                    index, batch, positions, record, point_idx, fence_idx, not_after
                )
                codes[positions] = seg_codes
                used = positions[seg_codes == USED]
                used = used[np.argsort(batch.t[used], kind="stable")]
            else:
                seg, seg_codes, ids, travel = checked
                codes[seg] = seg_codes
                used = seg[seg_codes == USED]
                new_record, seg_transitions = self._fences(
                    index, batch, used, record, ids, margins, point_idx, fence_idx, deep
                )
            new_records[device_id] = new_record
            _forget_run_out(new_record)
            transitions.extend(seg_transitions)
            if self.prediction is not None:
                odometer(
                    batch,
                    used,
                    travel,
                    record,
                    new_record,
                    self.prediction,
                    self.tracking.max_speed_mps,
                )
            self._motion(batch, used, device_id, new_record, motions, skips)
        predicted = self._predict(index, motions, skips, new_records, transitions)
        transitions.sort(key=_TRANSITION_ORDER)
        return BatchOutcome(new_records, transitions, codes, predicted)

    def _single_fixes(
        self,
        batch: FixBatch,
        segments: list[tuple[str, NDArray[np.intp]]],
        records: Mapping[str, Record],
        not_after: float | None = None,
    ) -> dict[str, Checked]:
        """``_validity`` of every device with one fix in the batch, as array operations over
        all of them at once, where ``_validity`` takes one device and a one-element array per
        step. Phones send a fix per request, so a group of such requests is made of these
        (tests/unit/geo/test_single_fixes.py: the same outcomes to the last bit). A device
        with a pending jump (``j``) is left to the state machine, as there."""
        singles = [
            (device_id, int(positions[0]))
            for device_id, positions in segments
            if positions.size == 1 and "j" not in (records.get(device_id) or ())
        ]
        if not singles:
            return {}
        rules = self.tracking
        n = len(singles)
        at = np.fromiter((i for _, i in singles), dtype=np.intp, count=n)
        recs = [records.get(device_id) or {} for device_id, _ in singles]
        t = batch.t[at]
        codes = np.empty(n, dtype=np.int8)
        codes.fill(USED)
        mock = batch.mock[at]
        if mock.any():
            codes[mock] = _MOCK
        if not_after is not None:
            codes[(codes == USED) & (t > not_after)] = _FUTURE
        remembered: list[list[str]] = []
        for k, record in enumerate(recs):
            ids = list(record.get("ids", []))
            ping_id = None if batch.ping_ids is None else batch.ping_ids[singles[k][1]]
            if ping_id is not None:
                if ping_id in ids:
                    codes[k] = _DUPLICATE  # a repeat, mock or not
                else:
                    ids.append(ping_id)
            remembered.append(ids)
        watermarks = np.fromiter(
            (math.nan if (w := r.get("w")) is None else w for r in recs), np.float64, count=n
        )
        codes[(codes == USED) & (t <= watermarks)] = _STALE  # nan: no watermark yet
        codes[(codes == USED) & (batch.accuracy[at] > rules.max_accuracy_m)] = _INACCURATE
        previous = [r.get("p") for r in recs]
        moved = [k for k in (codes == USED).nonzero()[0].tolist() if previous[k] is not None]
        travels: dict[int, Travel] = {}
        jumped: set[int] = set()
        if moved:
            before = np.array([previous[k] for k in moved], dtype=np.float64).reshape(-1, 3)
            rows = at[moved]
            metres = pair_lengths_m(before[:, 0], before[:, 1], batch.lon[rows], batch.lat[rows])
            seconds = t[moved] - before[:, 2]
            jumps = metres > rules.max_speed_mps * np.maximum(seconds, 1.0)
            for j, k in enumerate(moved):
                if jumps[j]:
                    jumped.add(k)  # the state machine judges it
                else:
                    travels[k] = Travel(metres[j : j + 1], seconds[j : j + 1])
        return {
            device_id: None
            if k in jumped
            else (at[k : k + 1], codes[k : k + 1], remembered[k], travels.get(k))
            for k, (device_id, _) in enumerate(singles)
        }

    def _validity(
        self,
        batch: FixBatch,
        positions: NDArray[np.intp],
        record: Mapping[str, Any],
        not_after: float | None = None,
    ) -> Checked:
        """Ordering, duplicates, mock, accuracy and jumps as array operations, in event-time
        order, with the metres and seconds between used fixes (from the last one before the
        batch).
        None when a jump needs the state machine to judge it."""
        rules = self.tracking
        t = batch.t[positions]
        ordered = t.size < 2 or bool((t[1:] > t[:-1]).all())
        if ordered:  # strictly in time order already (the usual case): nothing ties
            seg = positions
        else:
            if batch.ping_ids is not None:  # the order of tracking.fix_order, ids included
                keys = [fix_order(batch.fix(int(i))) for i in positions.tolist()]
                order = np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.intp)
            else:  # missing accuracy sorts last, as in tracking.fix_order
                rank = np.nan_to_num(batch.accuracy[positions], nan=np.inf)
                order = np.lexsort(
                    (batch.lat[positions], batch.lon[positions], rank, batch.t[positions])
                )
            seg = positions[order]
            t = batch.t[seg]
        codes = np.empty(seg.size, dtype=np.int8)
        codes.fill(USED)
        mock = batch.mock[seg]
        if mock.any():
            codes[mock] = _MOCK
        if not_after is not None:
            codes[(codes == USED) & (t > not_after)] = _FUTURE
        ids = list(record.get("ids", []))
        if batch.ping_ids is not None:
            seen = set(ids)
            for k, i in enumerate(seg.tolist()):
                ping_id = batch.ping_ids[i]
                if ping_id is None:
                    continue
                if ping_id in seen:
                    codes[k] = _DUPLICATE  # a repeat, mock or not
                else:
                    seen.add(ping_id)
                    ids.append(ping_id)
        watermark = record.get("w")
        if watermark is not None:
            codes[(codes == USED) & (t <= watermark)] = _STALE
        codes[(codes == USED) & (batch.accuracy[seg] > rules.max_accuracy_m)] = _INACCURATE
        used = (codes == USED).nonzero()[0]
        if not ordered and used.size > 1:  # of fixes with the same time only the first counts
            codes[used[1:][np.diff(t[used]) == 0]] = _STALE
            used = (codes == USED).nonzero()[0]
        # A fix at the time of a used one that sorts before it (a used fix with an accuracy:
        # the better accuracy sorts first, a missing one last) is stale whatever else is wrong
        # with it, as in the state machine, which sees the used fix first.
        late = (codes == _INACCURATE).nonzero()[0]
        if not ordered and late.size and used.size:
            ranked = t[used][~np.isnan(batch.accuracy[seg[used]])]
            codes[late[np.isin(t[late], ranked)]] = _STALE
        if used.size:
            lons, lats, times = batch.lon[seg[used]], batch.lat[seg[used]], t[used]
            previous = record.get("p")
            if previous is not None:
                lons = np.concatenate(([previous[0]], lons))
                lats = np.concatenate(([previous[1]], lats))
                times = np.concatenate(([previous[2]], times))
            if lons.size > 1:
                travel = Travel(step_lengths_m(lons, lats), times[1:] - times[:-1])
                if (travel.metres > rules.max_speed_mps * np.maximum(travel.seconds, 1.0)).any():
                    return None
                return seg, codes, ids, travel
        return seg, codes, ids, None

    def _fences(
        self,
        index: FenceIndex,
        batch: FixBatch,
        used: NDArray[np.intp],
        record: Mapping[str, Any],
        ids: list[str],
        margins: FloatArray,
        point_idx: NDArray[np.intp],
        fence_idx: NDArray[np.intp],
        deep: NDArray[np.bool_],
    ) -> tuple[Record, list[Transition]]:
        """Enter/exit/dwell over the used fixes (in time order), fence by fence: only fences
        the device holds or whose fence a fix is in are looked at (geo.visits)."""
        new: Record = dict(record)
        new["ap"] = dict(record.get("ap", {}))  # never change the caller's record
        new["ids"] = ids[-self.tracking.remembered_ping_ids :]
        inside: dict[str, dict[str, Any]] = {k: dict(v) for k, v in record.get("in", {}).items()}
        transitions: list[Transition] = []
        if used.size:
            slot = np.empty(len(batch), dtype=np.intp)
            slot.fill(-1)
            slot[used] = np.arange(used.size, dtype=np.intp)
            k = slot[point_idx]
            mine = (k >= 0).nonzero()[0]
            if inside or mine.size:
                hit_k, hit_f, hit_deep = k, fence_idx, deep
                if mine.size < k.size:  # fixes of other devices, or not used
                    hit_k, hit_f, hit_deep = k[mine], fence_idx[mine], deep[mine]
                if hit_k.size > 1 and not (hit_k[1:] >= hit_k[:-1]).all():
                    order = hit_k.argsort(kind="stable")  # time order, tree order within a fix
                    hit_k, hit_f, hit_deep = hit_k[order], hit_f[order], hit_deep[order]
                used_t = batch.t[used]
                fixes = DeviceFixes(
                    used_t.tolist(),
                    used_t,
                    batch.lon[used],
                    batch.lat[used],
                    margins[used],
                )
                inside, transitions, entered = scan_fences(
                    batch.device_ids[int(used[0])],
                    index,
                    fixes,
                    inside,
                    hit_k,
                    hit_f,
                    hit_deep,
                    self.tracking,
                )
                for fence_id in entered:
                    new["ap"].pop(fence_id, None)
            last = int(used[-1])
            if used.size > 1:
                before = int(used[-2])
                new["q"] = [
                    float(batch.lon[before]),
                    float(batch.lat[before]),
                    float(batch.t[before]),
                ]
            elif "p" in record:
                new["q"] = record["p"]
            new["p"] = [float(batch.lon[last]), float(batch.lat[last]), float(batch.t[last])]
            new["w"] = float(batch.t[last])
        new["in"] = inside
        return new, transitions

    @staticmethod
    def _distances(
        index: FenceIndex,
        batch: FixBatch,
        rows: NDArray[np.intp],
        inside: Mapping[str, Any],
        point_idx: NDArray[np.intp],
        fence_idx: NDArray[np.intp],
        signed: NDArray[np.float64],
    ) -> dict[int, dict[str, float]]:
        """Signed distance of each row to every fence it is in and every fence the device holds
        or may come to hold in this batch (for exit hysteresis), in one vectorised call."""
        fences = index.fences
        found: dict[int, dict[str, float]] = {}
        for p, f, s in zip(point_idx.tolist(), fence_idx.tolist(), signed.tolist(), strict=True):
            found.setdefault(p, {})[fences[f].fence_id] = s
        held = {f for f in inside if f in index.position}
        held.update(fences[f].fence_id for f in fence_idx.tolist())
        if held:
            _fill_ahead(index, batch, rows, sorted(held), found)
        return found

    def _scalar(
        self,
        index: FenceIndex,
        batch: FixBatch,
        positions: NDArray[np.intp],
        record: Mapping[str, Any],
        point_idx: NDArray[np.intp],
        fence_idx: NDArray[np.intp],
        not_after: float | None,
    ) -> tuple[Record, NDArray[np.int8], list[Transition]]:
        hit = np.isin(point_idx, positions)
        p, f = point_idx[hit], fence_idx[hit]
        # candidates are inside: rounding at an edge must not put one outside
        signed = np.minimum(index.signed_distances(batch.lon[p], batch.lat[p], f), 0.0)
        distances = self._distances(index, batch, positions, record.get("in", {}), p, f, signed)
        fixes = [batch.fix(int(i)) for i in positions.tolist()]
        per_fix = [distances.get(int(i), {}) for i in positions.tolist()]
        result = track_device(
            batch.device_ids[int(positions[0])],
            record,
            fixes,
            per_fix,
            index.by_id,
            self.tracking,
            not_after,
        )
        codes = np.array([STATUS_CODES.index(s) for s in result.statuses], dtype=np.int8)
        return result.record, codes, result.transitions

    # --- prediction ----------------------------------------------------------------------------

    def _motion(
        self,
        batch: FixBatch,
        used: NDArray[np.intp],
        device_id: str,
        record: Record,
        motions: list[Motion],
        skips: list[set[str]],
    ) -> None:
        """``used``: the device's used fixes in event-time order; the motion is the last one's."""
        if self.prediction is None or used.size == 0:
            return
        motion = motion_of(device_id, record, Reported.of(batch, int(used[-1])), self.prediction)
        if motion is None:
            return
        announced = record.get("ap", {})
        motions.append(motion)
        skips.append(set(record["in"]) | {f for f, until in announced.items() if until > motion.t})

    def _predict(
        self,
        index: FenceIndex,
        motions: list[Motion],
        skips: list[set[str]],
        records: dict[str, Record],
        transitions: list[Transition],
    ) -> int:
        if self.prediction is None or not motions:
            return 0
        by_device = {m.device_id: m for m in motions}
        found = predict(index, motions, skips, self.prediction)
        at: dict[str, datetime] = {}  # when each device's approaches happen: its motion's time
        for approach in found:
            fence = index.fences[approach.fence_idx]
            motion = by_device[approach.device_id]
            until = motion.t + approach.eta_s + self.prediction.repeat_after_s
            records[approach.device_id].setdefault("ap", {})[fence.fence_id] = until
            when = at.get(motion.device_id)
            if when is None:
                when = at[motion.device_id] = datetime.fromtimestamp(motion.t, UTC)
            transitions.append(
                Transition(
                    approach.device_id,
                    fence,
                    "approaching",
                    when,
                    {
                        "eta_s": round(approach.eta_s, 1),
                        "eta_earliest_s": round(approach.earliest_s, 1),
                        "eta_latest_s": round(approach.latest_s, 1),
                        "distance_m": round(approach.distance_m, 1),
                        "speed_mps": round(motion.speed_mps, 2),
                    },
                )
            )
        return len(found)


def _forget_run_out(record: Record) -> None:
    """Drop the announcements whose time ran out (``until`` at or before the device's last used
    fix). They can no longer hold back an approach (``_motion`` skips a fence only while
    ``until`` is after the motion's time, which never goes back), and a device passing stores it
    never enters would otherwise carry every one of them in its record for good. ``ap`` is the
    matcher's own copy here, never the caller's."""
    announced = record.get("ap")
    watermark = record.get("w")
    if announced and watermark is not None:
        for fence_id in [f for f, until in announced.items() if until <= watermark]:
            del announced[fence_id]


def _fill_ahead(
    index: FenceIndex,
    batch: FixBatch,
    rows: NDArray[np.intp],
    fence_ids: list[str],
    near: dict[int, dict[str, float]],
) -> None:
    """Signed distances of the next few fixes to the given fences, in one vectorised call."""
    positions = np.array([index.position[f] for f in fence_ids], dtype=np.intp)
    grid_rows = np.repeat(rows, positions.size)
    grid_fences = np.tile(positions, rows.size)
    values = index.signed_distances(batch.lon[grid_rows], batch.lat[grid_rows], grid_fences)
    for row, f, value in zip(
        grid_rows.tolist(), grid_fences.tolist(), values.tolist(), strict=True
    ):
        near.setdefault(row, {}).setdefault(index.fences[f].fence_id, value)


def _segments(device_ids: list[str]) -> list[tuple[str, NDArray[np.intp]]]:
    """Positions of each device's fixes, in first-seen order."""
    if device_ids and device_ids.count(device_ids[0]) == len(device_ids):
        return [(device_ids[0], np.arange(len(device_ids), dtype=np.intp))]
    groups: dict[str, list[int]] = {}
    for i, device_id in enumerate(device_ids):
        groups.setdefault(device_id, []).append(i)
    return [(d, np.asarray(p, dtype=np.intp)) for d, p in groups.items()]
