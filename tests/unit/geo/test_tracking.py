"""Presence over time (geo/tracking.py track_device, geo/matcher.py BatchMatcher): ordering,
duplicates, mock, accuracy, jumps, exit hysteresis, dwell; and the properties the two must share
(no flapping at the edge, order and batch-split independence, vectorised path == state machine).

Every scenario runs through BatchMatcher, the production entry point; ``reference`` feeds the same
fixes to track_device with the signed distance of every fix to every fence (the most complete input
its contract allows), which is the oracle the matcher's fast paths are compared with.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from geo import matcher as matcher_module
from geo.domain import CircleFence, Fence, FenceIndex, Fix, FixBatch, PolygonFence
from geo.geometry import EARTH_RADIUS_M, METRES_PER_DEGREE, PolygonShape
from geo.matcher import BatchMatcher, BatchOutcome
from geo.tracking import FixStatus, Record, TrackingRules, Transition, track_device

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LON0, LAT0 = 24.94, 60.17  # Helsinki
RULES = TrackingRules()  # 100 m accuracy limit, 20 m exit buffer, 2 fixes / 60 s, dwell 120 s
USED, STALE, DUPLICATE = FixStatus.USED, FixStatus.STALE, FixStatus.DUPLICATE
INACCURATE, JUMP, MOCK = FixStatus.INACCURATE, FixStatus.JUMP, FixStatus.MOCK
PROPERTY = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


# --- builders -------------------------------------------------------------------------------


def destination(lon: float, lat: float, bearing_deg: float, distance: float) -> tuple[float, float]:
    """The point ``distance`` metres from (lon, lat) along ``bearing_deg`` on the sphere."""
    phi1, lmb1 = math.radians(lat), math.radians(lon)
    theta, delta = math.radians(bearing_deg), distance / EARTH_RADIUS_M
    phi2 = math.asin(
        math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    )
    lmb2 = lmb1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * math.sin(phi2),
    )
    return (math.degrees(lmb2) + 180.0) % 360.0 - 180.0, math.degrees(phi2)


def to_lonlat(x: float, y: float) -> tuple[float, float]:
    """Metres east/north of (LON0, LAT0) -> lon/lat (equirectangular; exact enough at 1 km)."""
    return (
        LON0 + x / (METRES_PER_DEGREE * math.cos(math.radians(LAT0))),
        LAT0 + y / METRES_PER_DEGREE,
    )


F = CircleFence("F", "s1", LON0, LAT0, 100.0)
G_CENTRE = destination(LON0, LAT0, 90.0, 400.0)
G = CircleFence("G", "s2", G_CENTRE[0], G_CENTRE[1], 100.0)
# An L-shaped polygon 300-500 m north of F (metres in the local frame of (LON0, LAT0)).
L_SHAPE_M = [(-100, 300), (100, 300), (100, 380), (0, 380), (0, 500), (-100, 500), (-100, 300)]
P = PolygonFence(
    "P",
    "s3",
    PolygonShape({"type": "Polygon", "coordinates": [[to_lonlat(*c) for c in L_SHAPE_M]]}),
)
FAR = destination(LON0, LAT0, 45.0, 150_000.0)  # a teleport: 150 km away


def near_f(bearing: float, distance: float) -> tuple[float, float]:
    return destination(F.lon, F.lat, bearing, distance)


def fix(
    seconds: float,
    where: tuple[float, float] = (LON0, LAT0),
    accuracy: float | None = 5.0,
    device: str = "d1",
    **extra: Any,
) -> Fix:
    return Fix(device, where[0], where[1], T0 + timedelta(seconds=seconds), accuracy, **extra)


def process(
    fixes: Sequence[Fix],
    records: dict[str, Record] | None = None,
    fences: Sequence[Fence] = (F, G, P),
    rules: TrackingRules = RULES,
) -> BatchOutcome:
    return BatchMatcher(rules, None).process(
        FenceIndex(list(fences)), FixBatch.of(list(fixes)), records or {}
    )


def run_batches(
    batches: Sequence[Sequence[Fix]],
    fences: Sequence[Fence] = (F, G, P),
    rules: TrackingRules = RULES,
    records: dict[str, Record] | None = None,
) -> tuple[dict[str, Record], list[Transition], list[FixStatus]]:
    """Several batches in turn through one matcher, records carried over."""
    matcher, index = BatchMatcher(rules, None), FenceIndex(list(fences))
    records = dict(records or {})
    transitions: list[Transition] = []
    statuses: list[FixStatus] = []
    for batch in batches:
        outcome = matcher.process(index, FixBatch.of(list(batch)), records)
        records = {**records, **outcome.records}
        transitions.extend(outcome.transitions)
        statuses.extend(outcome.statuses)
    return records, transitions, statuses


def all_distances(index: FenceIndex, fixes: Sequence[Fix]) -> list[dict[str, float]]:
    """The signed distance of every fix to every fence of the index."""
    n, m = len(fixes), len(index)
    if n == 0 or m == 0:
        return [{} for _ in fixes]
    lons = np.repeat([f.lon for f in fixes], m)
    lats = np.repeat([f.lat for f in fixes], m)
    fence_idx = np.tile(np.arange(m, dtype=np.intp), n)
    signed = index.signed_distances(lons, lats, fence_idx).reshape(n, m)
    return [{index.fences[j].fence_id: float(signed[i, j]) for j in range(m)} for i in range(n)]


def reference(
    fixes: Sequence[Fix],
    record: Record | None = None,
    fences: Sequence[Fence] = (F, G, P),
    rules: TrackingRules = RULES,
    device: str = "d1",
) -> tuple[Record, list[Transition], list[FixStatus]]:
    index = FenceIndex(list(fences))
    result = track_device(device, record, fixes, all_distances(index, fixes), index.by_id, rules)
    return result.record, result.transitions, result.statuses


def events(transitions: Sequence[Transition]) -> list[tuple[str, str, float]]:
    """(kind, fence id, seconds after T0) of each transition, in order."""
    return [(t.kind, t.fence.fence_id, (t.occurred_at - T0).total_seconds()) for t in transitions]


def canonical(transitions: Sequence[Transition]) -> list[tuple[Any, ...]]:
    """Transitions in an order independent of how a producer sorts simultaneous ones."""
    return sorted(
        (t.occurred_at, t.device_id, t.kind, t.fence.fence_id, sorted(t.details.items()))
        for t in transitions
    )


# --- entering -------------------------------------------------------------------------------


def test_first_fix_inside_a_fence_enters_it_at_the_fix_time() -> None:
    outcome = process([fix(0)])

    assert events(outcome.transitions) == [("enter", "F", 0.0)]
    assert outcome.statuses == [USED]
    record = outcome.records["d1"]
    assert record["in"] == {"F": {"s": T0.timestamp(), "d": 0, "o": None, "n": 0}}
    assert record["w"] == T0.timestamp()
    assert record["p"] == [LON0, LAT0, T0.timestamp()]


def test_staying_inside_does_not_enter_again_and_keeps_the_entry_time() -> None:
    records, transitions, _ = run_batches([[fix(0)], [fix(30), fix(60, near_f(0, 50))]])

    assert events(transitions) == [("enter", "F", 0.0)]
    assert records["d1"]["in"]["F"]["s"] == T0.timestamp()
    assert records["d1"]["w"] == T0.timestamp() + 60


@pytest.mark.parametrize(
    ("depth_m", "accuracy", "enters"),
    [
        (10.0, 30.0, False),  # -10 + 0.5 * 30 = 5 > 0: the fix may well be outside
        (10.0, 20.5, False),  # -10 + 0.5 * 20.5 = 0.25 > 0
        (10.0, 19.5, True),  # -10 + 0.5 * 19.5 = -0.25: just enough
        (10.0, None, True),  # no accuracy: taken at face value
        (0.5, 0.0, True),  # just inside the edge with a perfect fix
        (-0.5, 0.0, False),  # just outside it
    ],
)
def test_entry_needs_the_fix_inside_by_half_its_accuracy(
    depth_m: float, accuracy: float | None, enters: bool
) -> None:
    where = near_f(90.0, F.radius_m - depth_m)

    outcome = process([fix(0, where, accuracy)], fences=[F])

    assert [t.kind for t in outcome.transitions] == (["enter"] if enters else [])


def test_a_point_in_a_polygons_notch_does_not_enter_it_and_one_in_its_arm_does() -> None:
    notch = to_lonlat(50, 440)  # inside the L's bounding box, outside the L
    arm = to_lonlat(-50, 440)

    outcome = process([fix(0, notch), fix(30, arm)], fences=[P])

    assert events(outcome.transitions) == [("enter", "P", 30.0)]


def test_overlapping_fences_are_each_entered_by_one_fix() -> None:
    wide = CircleFence("W", "s9", LON0, LAT0, 300.0)

    outcome = process([fix(0)], fences=[F, wide])

    assert sorted(events(outcome.transitions)) == [("enter", "F", 0.0), ("enter", "W", 0.0)]


# --- exit hysteresis ------------------------------------------------------------------------


def test_one_fix_clearly_outside_is_not_an_exit_the_second_in_a_row_is() -> None:
    outside = near_f(90.0, F.radius_m + 60.0)  # 60 m out > 20 m buffer + 0.5 * 5 m

    records, transitions, _ = run_batches(
        [[fix(0)], [fix(20, outside)], [fix(40, outside)]], fences=[F]
    )

    assert events(transitions) == [("enter", "F", 0.0), ("exit", "F", 40.0)]
    assert transitions[-1].details == {"duration_s": 20.0}  # entry to first clearly outside
    assert records["d1"]["in"] == {}


def test_a_fix_back_inside_resets_the_exit_count() -> None:
    outside = near_f(90.0, F.radius_m + 60.0)

    _, transitions, _ = run_batches(
        [[fix(0), fix(20, outside)], [fix(30)], [fix(40, outside)]], fences=[F]
    )

    assert events(transitions) == [("enter", "F", 0.0)]


def test_one_fix_outside_for_longer_than_the_confirm_time_exits() -> None:
    rules = replace(RULES, exit_confirm_fixes=3, exit_confirm_s=60.0)
    outside = near_f(90.0, F.radius_m + 60.0)

    _, transitions, _ = run_batches(
        [[fix(0)], [fix(100, outside)], [fix(159, outside)], [fix(160, outside)]],
        fences=[F],
        rules=rules,
    )

    # 100 s: first outside (1); 159 s: 2 fixes, 59 s; 160 s: 3 fixes and 60 s.
    assert events(transitions) == [("enter", "F", 0.0), ("exit", "F", 160.0)]
    assert transitions[-1].details == {"duration_s": 100.0}


def test_time_alone_confirms_an_exit_when_fixes_are_sparse() -> None:
    rules = replace(RULES, exit_confirm_fixes=10, exit_confirm_s=60.0)
    outside = near_f(90.0, F.radius_m + 60.0)

    _, transitions, _ = run_batches(
        [[fix(0)], [fix(100, outside)], [fix(160, outside)]], fences=[F], rules=rules
    )

    assert events(transitions)[-1] == ("exit", "F", 160.0)


@pytest.mark.parametrize(
    ("beyond_edge_m", "accuracy", "exits"),
    [
        (19.5, 0.0, False),  # within the 20 m buffer
        (20.5, 0.0, True),
        (35.0, 40.0, False),  # 35 <= 20 + 0.5 * 40
        (41.0, 40.0, True),
        (41.0, None, True),  # no accuracy: face value
    ],
)
def test_clearly_outside_means_beyond_the_buffer_plus_half_the_accuracy(
    beyond_edge_m: float, accuracy: float | None, exits: bool
) -> None:
    where = near_f(0.0, F.radius_m + beyond_edge_m)
    later = [fix(60 * k, where, accuracy) for k in range(1, 6)]

    _, transitions, _ = run_batches([[fix(0)], later], fences=[F])

    assert ("exit" in [t.kind for t in transitions]) is exits


def test_leaving_one_fence_for_another_exits_the_first_and_enters_the_second() -> None:
    _, transitions, _ = run_batches([[fix(0)], [fix(30, G_CENTRE)], [fix(60, G_CENTRE)]])

    assert events(transitions) == [
        ("enter", "F", 0.0),
        ("enter", "G", 30.0),
        ("exit", "F", 60.0),
    ]
    assert transitions[-1].details == {"duration_s": 30.0}


def test_a_fence_that_no_longer_exists_is_dropped_without_an_exit() -> None:
    records, _, _ = run_batches([[fix(0)]], fences=[F])

    new, transitions, _ = run_batches([[fix(30, near_f(90, 500))]], fences=[G], records=records)

    assert transitions == []
    assert new["d1"]["in"] == {}


def test_the_record_survives_a_json_round_trip() -> None:
    records, _, _ = run_batches([[fix(0), fix(20, near_f(90, 200))]], fences=[F])
    stored = json.loads(json.dumps(records))

    _, transitions, _ = run_batches([[fix(40, near_f(90, 200))]], fences=[F], records=stored)

    assert events(transitions) == [("exit", "F", 40.0)]


# --- ordering, duplicates, mock, accuracy ---------------------------------------------------


def test_an_unsorted_batch_is_processed_in_event_time_order() -> None:
    outside = near_f(90.0, 200.0)
    batch = [fix(60, G_CENTRE), fix(0), fix(40, outside), fix(20, outside)]

    outcome = process(batch)

    assert events(outcome.transitions) == [
        ("enter", "F", 0.0),
        ("exit", "F", 40.0),
        ("enter", "G", 60.0),
    ]
    assert outcome.statuses == [USED] * 4
    assert outcome.records["d1"]["w"] == T0.timestamp() + 60


@pytest.mark.parametrize("seconds", [30, 29, -60])
def test_a_fix_not_newer_than_the_last_used_one_is_stale(seconds: int) -> None:
    records, _, _ = run_batches([[fix(0), fix(30)]], fences=[F])

    new, transitions, statuses = run_batches(
        [[fix(seconds, G_CENTRE)]], fences=[F, G], records=records
    )

    assert statuses == [STALE]
    assert transitions == []
    assert new == records


def test_of_fixes_with_the_same_time_only_the_most_accurate_counts() -> None:
    outcome = process([fix(0, G_CENTRE, accuracy=30.0), fix(0, accuracy=10.0)], fences=[F, G])

    assert outcome.statuses == [STALE, USED]
    assert events(outcome.transitions) == [("enter", "F", 0.0)]


def test_a_resent_ping_is_a_duplicate_in_the_same_and_in_a_later_batch() -> None:
    first = [fix(0, ping_id="a"), fix(20, near_f(90, 200), ping_id="b")]
    records, _, _ = run_batches([first], fences=[F])

    outcome = process([fix(20, near_f(90, 200), ping_id="b"), fix(0, ping_id="a")], records, [F])
    again = process([fix(40, near_f(90, 200), ping_id="c")] * 2, records, [F])

    assert outcome.statuses == [DUPLICATE, DUPLICATE]
    assert outcome.transitions == []
    assert outcome.records["d1"] == records["d1"]
    assert again.statuses == [USED, DUPLICATE]
    assert events(again.transitions) == [("exit", "F", 40.0)]


def test_a_duplicate_ping_id_wins_over_newer_content() -> None:
    """The id decides: a different fix under an id already seen is not used."""
    records, _, _ = run_batches([[fix(0, ping_id="a")]], fences=[F])

    outcome = process([fix(60, G_CENTRE, ping_id="a")], records, [F, G])

    assert outcome.statuses == [DUPLICATE]
    assert outcome.transitions == []


def test_a_mock_location_is_ignored_and_does_not_move_the_watermark() -> None:
    outcome = process([fix(10, mock=True), fix(5, near_f(90, 500))], fences=[F])

    assert outcome.statuses == [MOCK, USED]
    assert outcome.transitions == []
    assert outcome.records["d1"]["w"] == T0.timestamp() + 5


def test_an_inaccurate_fix_is_ignored_and_does_not_move_the_watermark() -> None:
    """The new rule: a fix too vague to use is not "processed", so an older accurate fix that
    arrives after it still counts."""
    records, _, _ = run_batches([[fix(0)]], fences=[F, G])
    outside = near_f(90.0, 200.0)

    records, transitions, statuses = run_batches(
        [[fix(300, G_CENTRE, accuracy=5_000.0)], [fix(100, outside), fix(120, outside)]],
        fences=[F, G],
        records=records,
    )

    assert statuses == [INACCURATE, USED, USED]
    assert events(transitions) == [("exit", "F", 120.0)]
    assert records["d1"]["w"] == T0.timestamp() + 120


@pytest.mark.parametrize(("accuracy", "status"), [(100.0, USED), (100.1, INACCURATE)])
def test_the_accuracy_limit_is_inclusive(accuracy: float, status: FixStatus) -> None:
    # At 100 m accuracy the entry margin is 50 m: the centre of a 100 m fence still enters.
    outcome = process([fix(0, accuracy=accuracy)], fences=[F])

    assert outcome.statuses == [status]
    assert [t.kind for t in outcome.transitions] == (["enter"] if status is USED else [])


# --- jumps ----------------------------------------------------------------------------------


def test_a_single_teleport_fix_is_ignored_as_a_jump() -> None:
    records, transitions, statuses = run_batches([[fix(0)], [fix(30, FAR), fix(60)]], fences=[F, G])

    assert statuses == [USED, JUMP, USED]
    assert events(transitions) == [("enter", "F", 0.0)]
    assert "j" not in records["d1"]
    assert records["d1"]["p"][:2] == [LON0, LAT0]


def test_a_real_relocation_is_accepted_when_the_next_fix_agrees() -> None:
    there = CircleFence("T", "s4", FAR[0], FAR[1], 150.0)
    next_to_it = destination(FAR[0], FAR[1], 0.0, 50.0)

    for batches in (
        [[fix(0)], [fix(60, FAR), fix(120, next_to_it), fix(180, next_to_it)]],
        [[fix(0)], [fix(60, FAR)], [fix(120, next_to_it)], [fix(180, next_to_it)]],
    ):
        records, transitions, statuses = run_batches(batches, fences=[F, there])

        assert statuses == [USED, JUMP, USED, USED]
        assert events(transitions) == [
            ("enter", "F", 0.0),
            ("enter", "T", 120.0),
            ("exit", "F", 180.0),
        ]
        assert transitions[-1].details == {"duration_s": 120.0}
        assert "j" not in records["d1"]


def test_two_teleports_to_different_places_are_both_ignored() -> None:
    elsewhere = destination(LON0, LAT0, 200.0, 300_000.0)

    _, transitions, statuses = run_batches([[fix(0)], [fix(60, FAR)], [fix(120, elsewhere)]])

    assert statuses == [USED, JUMP, JUMP]
    assert events(transitions) == [("enter", "F", 0.0)]


def test_a_fast_but_possible_move_is_not_a_jump() -> None:
    # 80 m/s (a fast train), under the 300 km/h limit
    records, _, statuses = run_batches([[fix(0), fix(100, near_f(90.0, 8_000.0))]])

    assert statuses == [USED, USED]
    assert "j" not in records["d1"]


# --- dwell ----------------------------------------------------------------------------------


def test_dwell_fires_once_per_visit_after_the_default_dwell_time() -> None:
    inside = [fix(s, near_f(45, 20)) for s in (0, 60, 119, 120, 180, 600)]
    leave = [fix(s, near_f(90, 300)) for s in (660, 680)]
    back = [fix(s) for s in (700, 819, 820, 900)]

    _, transitions, _ = run_batches([inside, leave, back], fences=[F])

    assert events(transitions) == [
        ("enter", "F", 0.0),
        ("dwell", "F", 120.0),
        ("exit", "F", 680.0),
        ("enter", "F", 700.0),
        ("dwell", "F", 820.0),
    ]
    assert transitions[1].details == {"dwell_s": 120.0}
    assert transitions[2].details == {"duration_s": 660.0}


def test_a_fences_own_dwell_time_overrides_the_default() -> None:
    quick = CircleFence("Q", "s5", LON0, LAT0, 100.0, dwell_s=30)
    slow = CircleFence("S", "s6", LON0, LAT0, 100.0, dwell_s=600)

    _, transitions, _ = run_batches(
        [[fix(s) for s in (0, 29, 30, 200, 599, 600, 700)]], fences=[quick, slow]
    )

    assert [e for e in events(transitions) if e[0] == "dwell"] == [
        ("dwell", "Q", 30.0),
        ("dwell", "S", 600.0),
    ]


def test_no_default_dwell_means_only_fences_with_their_own_dwell_time_fire() -> None:
    rules = replace(RULES, default_dwell_s=None)
    own = CircleFence("O", "s7", LON0, LAT0, 100.0, dwell_s=60)

    _, transitions, _ = run_batches([[fix(s) for s in (0, 60, 3600)]], fences=[F, own], rules=rules)

    assert [e for e in events(transitions) if e[0] == "dwell"] == [("dwell", "O", 60.0)]


def test_dwell_needs_a_fix_truly_inside_not_in_the_exit_band() -> None:
    band = near_f(0.0, F.radius_m + 10.0)

    _, transitions, _ = run_batches(
        [[fix(0), fix(130, band), fix(140, band), fix(150)]], fences=[F]
    )

    assert events(transitions) == [("enter", "F", 0.0), ("dwell", "F", 150.0)]


# --- several devices ------------------------------------------------------------------------


def test_devices_in_one_batch_are_tracked_independently() -> None:
    batch = [
        fix(0, device="a"),
        fix(0, G_CENTRE, device="b"),
        fix(20, near_f(90, 300), device="a"),
        fix(40, near_f(90, 300), device="a"),
        fix(40, G_CENTRE, device="b", mock=True),
    ]

    outcome = process(batch)

    assert [(t.device_id, t.kind, t.fence.fence_id) for t in outcome.transitions] == [
        ("a", "enter", "F"),
        ("b", "enter", "G"),
        ("a", "exit", "F"),
    ]
    assert outcome.statuses == [USED, USED, USED, USED, MOCK]
    assert set(outcome.records) == {"a", "b"}
    assert outcome.records["b"]["in"].keys() == {"G"}


# --- known disagreements (source bugs) ------------------------------------------------------


def test_matcher_and_state_machine_agree_on_same_time_fixes_with_and_without_accuracy() -> None:
    fixes = [fix(0, accuracy=None), fix(0, near_f(90.0, 500.0), accuracy=10.0)]

    outcome = process(fixes, fences=[F])
    record, transitions, statuses = reference(fixes, fences=[F])

    assert outcome.statuses == statuses  # state machine: [STALE, USED]; matcher: [USED, STALE]
    assert canonical(outcome.transitions) == canonical(transitions)  # matcher enters F, tracker not
    assert outcome.records["d1"] == record


def test_matcher_record_does_not_depend_on_arrival_order_of_identical_fixes() -> None:
    a, b = fix(0, ping_id="p1"), fix(0, ping_id="p2")

    forward = process([a, b], fences=[F]).records["d1"]
    backward = process([b, a], fences=[F]).records["d1"]

    assert forward == backward  # ids: ['p1', 'p2'] vs ['p2', 'p1']


@pytest.mark.parametrize("used_accuracy", [5.0, None])
def test_matcher_and_state_machine_label_an_ignored_same_time_fix_alike(
    used_accuracy: float | None,
) -> None:
    """An inaccurate fix at the time of the used one: stale when the used one sorts first (it
    has an accuracy), inaccurate when it sorts last (it has none)."""
    fixes = [fix(0, accuracy=150.0), fix(0, accuracy=used_accuracy)]

    statuses = process(fixes, fences=[F]).statuses

    assert statuses == reference(fixes, fences=[F])[2]
    assert statuses == [STALE if used_accuracy else INACCURATE, USED]


# --- properties -----------------------------------------------------------------------------

# (a) no flapping: inside, then anywhere between deep inside and edge + exit buffer.

BAND = RULES.exit_buffer_m * 0.9  # margin for the metre frames of test and engine (~mm apart)


@st.composite
def circle_jitter(draw: st.DrawFn) -> tuple[CircleFence, list[tuple[float, float]]]:
    radius = draw(st.floats(30.0, 300.0))
    fence = CircleFence("C", "s", LON0, LAT0, radius)
    offsets = draw(
        st.lists(st.tuples(st.floats(0.0, 360.0), st.floats(0.0, radius + BAND)), max_size=25)
    )
    return fence, [destination(LON0, LAT0, b, d) for b, d in offsets]


L_POLYGON = Polygon(L_SHAPE_M)


@st.composite
def polygon_jitter(draw: st.DrawFn) -> tuple[PolygonFence, list[tuple[float, float]]]:
    points = []
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.booleans()):  # near the edge: a boundary point moved by <= BAND metres
            edge = L_POLYGON.exterior.interpolate(draw(st.floats(0.0, 1.0)), normalized=True)
            angle, length = draw(st.floats(0.0, 2 * math.pi)), draw(st.floats(0.0, BAND))
            x, y = edge.x + length * math.cos(angle), edge.y + length * math.sin(angle)
        elif draw(st.booleans()):  # anywhere in the L's upright arm
            x, y = draw(st.floats(-100.0, 0.0)), draw(st.floats(300.0, 500.0))
        else:  # anywhere in its foot
            x, y = draw(st.floats(0.0, 100.0)), draw(st.floats(300.0, 380.0))
        points.append(to_lonlat(x, y))
    return P, points


@PROPERTY
@given(
    st.one_of(circle_jitter(), polygon_jitter()),
    st.lists(st.integers(30, 300), min_size=25, max_size=25),
    st.lists(st.one_of(st.none(), st.floats(0.0, 100.0)), min_size=25, max_size=25),
    st.integers(1, 6),
)
def test_no_flapping_jitter_inside_and_in_the_exit_band_never_exits_or_reenters(
    case: tuple[Fence, list[tuple[float, float]]],
    gaps: list[int],
    accuracies: list[float | None],
    batch_size: int,
) -> None:
    fence, points = case
    start = fence.anchor if isinstance(fence, CircleFence) else to_lonlat(-50, 400)
    times = np.cumsum([0, *gaps[: len(points)]]).tolist()
    fixes = [fix(times[0], start)] + [
        fix(t, p, a) for t, p, a in zip(times[1:], points, accuracies, strict=False)
    ]
    batches = [fixes[i : i + batch_size] for i in range(0, len(fixes), batch_size)]

    records, transitions, statuses = run_batches(batches, fences=[fence])
    ref_record, ref_transitions, _ = reference(fixes, fences=[fence])

    for kinds in ([t.kind for t in transitions], [t.kind for t in ref_transitions]):
        assert kinds[0] == "enter"
        assert "exit" not in kinds and kinds.count("enter") == 1
        assert kinds.count("dwell") <= 1
    assert list(records["d1"]["in"]) == [fence.fence_id] == list(ref_record["in"])
    assert set(statuses) == {USED}


# A small world of positions for the ordering properties: deep inside F, just inside its edge
# (entered only by an accurate fix), its exit band, clearly outside, inside G, inside the polygon P,
# and far away (a jump).
SPOTS = {
    "F": (LON0, LAT0),
    "F-edge": near_f(10.0, 95.0),
    "F-band": near_f(200.0, 112.0),
    "out": near_f(135.0, 200.0),
    "G": G_CENTRE,
    "P": to_lonlat(-50.0, 350.0),
    "far": FAR,
}
NEAR_SPOTS = [k for k in SPOTS if k != "far"]


@st.composite
def fix_lists(
    draw: st.DrawFn, spots: Sequence[str] = tuple(SPOTS), devices: Sequence[str] = ("d1",)
) -> list[Fix]:
    """Fixes with realistic ids: distinct pings differ in time, accuracy or place; a duplicate
    (resend) is an exact copy."""
    fixes: list[Fix] = []
    seen: set[tuple[Any, ...]] = set()
    for k in range(draw(st.integers(0, 14))):
        device = draw(st.sampled_from(devices))
        seconds = draw(st.integers(0, 40)) * 15
        spot = SPOTS[draw(st.sampled_from(spots))]
        accuracy = draw(st.sampled_from([None, 0.0, 5.0, 30.0, 60.0, 150.0]))
        key = (device, seconds, accuracy or 0.0, spot)
        if key in seen:
            continue
        seen.add(key)
        ping = draw(st.sampled_from([None, f"p{k}"]))
        mocked = draw(st.booleans()) and k % 3 == 0
        new = fix(seconds, spot, accuracy, device, mock=mocked, ping_id=ping)
        fixes.append(new)
        if ping is not None and draw(st.booleans()):
            fixes.append(new)  # the SDK sent it again
    return fixes


def starting_records() -> st.SearchStrategy[dict[str, Record]]:
    """No record, a device inside F since before T0, or one with a pending jump."""
    inside = run_batches([[fix(-300), fix(-30, near_f(0, 30))]])[0]
    pending = run_batches([[fix(-300), fix(-60, FAR, ping_id="old")]])[0]
    return st.sampled_from([{}, inside, pending])


# (b) order independence


@PROPERTY
@given(
    fix_lists(devices=("d1", "d2")),
    starting_records(),
    st.randoms(use_true_random=False),
)
def test_any_order_of_a_batch_gives_the_same_transitions_and_records(
    fixes: list[Fix], records: dict[str, Record], rnd: random.Random
) -> None:
    shuffled = list(fixes)
    rnd.shuffle(shuffled)

    in_order = process(fixes, records)
    any_order = process(shuffled, records)

    assert any_order.transitions == in_order.transitions
    assert any_order.records == in_order.records
    for device in ("d1", "d2"):
        mine = [f for f in fixes if f.device_id == device]
        theirs = [f for f in shuffled if f.device_id == device]
        ref = reference(mine, records.get(device), device=device)
        again = reference(theirs, records.get(device), device=device)
        assert canonical(again[1]) == canonical(ref[1])
        assert again[0] == ref[0]


# (c) batch split independence


@PROPERTY
@given(fix_lists(), starting_records(), st.lists(st.integers(0, 20), max_size=4))
def test_splitting_a_time_ordered_stream_into_batches_changes_nothing(
    fixes: list[Fix], records: dict[str, Record], cuts: list[int]
) -> None:
    ordered = sorted(fixes, key=lambda f: (f.recorded_at, f.accuracy_m or 0.0))
    # cut only between different times: a same-time fix arriving in a later batch is stale by rule
    allowed = [
        i for i in range(1, len(ordered)) if ordered[i].recorded_at > ordered[i - 1].recorded_at
    ]
    bounds = sorted({allowed[c % len(allowed)] for c in cuts} if allowed else set())
    batches = [ordered[a:b] for a, b in zip([0, *bounds], [*bounds, len(ordered)], strict=True)]

    whole_records, whole, whole_statuses = run_batches([ordered], records=records)
    split_records, split, split_statuses = run_batches(batches, records=records)

    assert split == whole
    assert split_records == whole_records
    assert split_statuses == whole_statuses
    record = records.get("d1")
    for part in batches:
        record, _, _ = reference(part, record)
    assert record == reference(ordered, records.get("d1"))[0]


# (d) the vectorised path agrees with the state machine


@contextmanager
def state_machine_forbidden() -> Iterator[None]:
    """Fail if the matcher hands the batch to track_device: the test is about its own path."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("BatchMatcher took the per-fix state machine path")

    with mock.patch.object(matcher_module, "track_device", refuse):
        yield


@PROPERTY
@given(fix_lists(spots=NEAR_SPOTS), st.sampled_from([0, 1]))
@example([fix(0), fix(15, SPOTS["out"]), fix(30, SPOTS["out"]), fix(45, SPOTS["G"], 150.0)], 0)
def test_the_vectorised_path_gives_what_the_state_machine_gives(
    fixes: list[Fix], start: int
) -> None:
    records = [{}, run_batches([[fix(-300), fix(-30, near_f(0, 30), ping_id="p0")]])[0]][start]

    with state_machine_forbidden():
        outcome = process(fixes, records)
    record, transitions, statuses = reference(fixes, records.get("d1"))

    assert canonical(outcome.transitions) == canonical(transitions)
    assert outcome.statuses == statuses
    if fixes:
        assert outcome.records["d1"] == record


def test_the_vectorised_path_is_taken_for_an_ordinary_batch() -> None:
    """Guards the property above: the patch really intercepts the state machine path."""
    with state_machine_forbidden():
        process([fix(0), fix(30, G_CENTRE)])
    with state_machine_forbidden(), pytest.raises(AssertionError, match="state machine path"):
        process([fix(0), fix(30, FAR)])


@settings(deadline=None, max_examples=25)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["F", "F-edge", "F-band", "out", "G"]),
            st.sampled_from([None, 5.0, 40.0]),
        ),
        min_size=33,
        max_size=90,
    )
)
def test_long_batches_agree_with_the_state_machine_past_the_look_ahead_window(
    steps: list[tuple[str, float | None]],
) -> None:
    """The matcher classifies fixes against a held fence a window at a time (geo/visits.py
    FIRST_WINDOW, doubling); a batch longer than that window must still give what the state
    machine gives."""
    fixes = [fix(20 * k, SPOTS[spot], accuracy) for k, (spot, accuracy) in enumerate(steps)]
    fixes[0] = fix(0)

    with state_machine_forbidden():
        outcome = process(fixes)
    record, transitions, statuses = reference(fixes)

    assert canonical(outcome.transitions) == canonical(transitions)
    assert outcome.statuses == statuses
    assert outcome.records["d1"] == record
