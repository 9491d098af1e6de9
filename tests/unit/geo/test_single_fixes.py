"""The one-fix-per-device paths of the batch matcher (geo/matcher.py ``_single_fixes``,
geo/prediction.py ``_advance_one`` and ``_metres_between``) against the general code they stand
in for, to the last bit: phones send one fix per request, so these paths carry most traffic, and
a result that depended on which path ran would make a device's events depend on how its
requests happened to be grouped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from geo.domain import CircleFence, FenceIndex, Fix, FixBatch, pair_lengths_m, step_lengths_m
from geo.geometry import METRES_PER_DEGREE, to_local
from geo.matcher import BatchMatcher, BatchOutcome, Checked
from geo.prediction import PredictionRules, Travel, _advance, _advance_one, _metres_between
from geo.tracking import Record, TrackingRules

PROPERTY = settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
DAY = 86_400.0
NOW = T0.timestamp() + 10_000.0  # the server's clock: after every walk's fixes but those "ahead"
RULES = TrackingRules()
PREDICTION = PredictionRules()
# Fences on a line east of the start, 120 m apart, and one across the antimeridian.
FENCES = [CircleFence(f"f{k}", f"s{k}", 24.94 + 0.002 * k, 60.17, 45.0) for k in range(8)]
FENCES.append(CircleFence("dateline", "s-dl", 179.9995, -16.5, 60.0))
INDEX = FenceIndex(FENCES)


class ArrayPathMatcher(BatchMatcher):
    """The matcher with its one-fix path switched off: every device through ``_validity``."""

    def _single_fixes(
        self,
        batch: FixBatch,
        segments: list[tuple[str, np.ndarray]],
        records: Mapping[str, Record],
        not_after: float | None = None,
    ) -> dict[str, Checked]:
        return {}


@st.composite
def walks(draw: st.DrawFn) -> list[list[Fix]]:
    """Rounds of requests: in each, some of five devices send one fix. Devices walk, drive,
    stop, jitter, resend, teleport, mock, report poor accuracy; one crosses the antimeridian."""
    starts = {
        "a": (24.935, 60.17),
        "b": (24.95, 60.1702),
        "c": (24.96, 60.1699),
        "d": (179.999, -16.5),  # heads east over the antimeridian
        "e": (24.94, 60.17),
    }
    where = dict(starts)
    clock = dict.fromkeys(starts, 0.0)
    rounds: list[list[Fix]] = []
    sent: dict[str, Fix] = {}
    for r in range(draw(st.integers(1, 30))):
        batch: list[Fix] = []
        for device in draw(st.lists(st.sampled_from(sorted(starts)), unique=True, max_size=5)):
            kind = draw(
                st.sampled_from(
                    ["walk", "walk", "drive", "stop", "resend", "jump", "late", "ahead"]
                )
            )
            if kind == "resend" and device in sent:
                batch.append(sent[device])
                continue
            seconds = draw(st.sampled_from([0.0, 1.0, 5.0, 15.0, 40.0, 200.0]))
            clock[device] += seconds if kind != "late" else -seconds
            lon, lat = where[device]
            speed = {"walk": 1.4, "drive": 14.0, "jump": 50_000.0}.get(kind, 0.0)
            bearing = math.radians(draw(st.floats(0.0, 360.0)) if device != "d" else 90.0)
            metres = speed * max(seconds, 1.0) + draw(st.floats(0.0, 4.0))
            lon += metres * math.sin(bearing) / (METRES_PER_DEGREE * math.cos(math.radians(lat)))
            lat += metres * math.cos(bearing) / METRES_PER_DEGREE
            lon = (lon + 180.0) % 360.0 - 180.0
            if kind != "jump":
                where[device] = (lon, lat)
            accuracy = draw(st.sampled_from([None, 5.0, 5.0, 20.0, 150.0]))
            stamp = clock[device] + (DAY if kind == "ahead" else 0.0)  # a phone clock ahead
            fix = Fix(
                device,
                lon,
                lat,
                T0 + timedelta(seconds=stamp),
                accuracy,
                mock=draw(st.integers(0, 9)) == 0,
                ping_id=f"{device}-{r}",
            )
            sent[device] = fix
            batch.append(fix)
        rounds.append(batch)
    return rounds


def replay(matcher: BatchMatcher, rounds: Sequence[Sequence[Fix]]) -> list[BatchOutcome]:
    records: dict[str, Record] = {}
    outcomes = []
    for batch in rounds:
        if not batch:
            continue
        outcome = matcher.process(INDEX, FixBatch.of(list(batch)), records, NOW)
        records = {**records, **outcome.records}
        outcomes.append(outcome)
    return outcomes


@PROPERTY
@given(walks())
def test_the_one_fix_path_gives_what_the_array_path_gives(rounds: list[list[Fix]]) -> None:
    fast = replay(BatchMatcher(RULES, PREDICTION), rounds)
    general = replay(ArrayPathMatcher(RULES, PREDICTION), rounds)

    assert len(fast) == len(general)
    for mine, theirs in zip(fast, general, strict=True):
        assert mine.status_codes.tolist() == theirs.status_codes.tolist()
        assert mine.records == theirs.records
        assert mine.transitions == theirs.transitions
        assert mine.predicted == theirs.predicted


def test_the_walks_reach_every_status_and_event_kind() -> None:
    """The property above is only as good as its walks: a fixed set of them covers every
    status the one-fix path decides and every kind of event."""
    statuses: set[str] = set()
    kinds: set[str] = set()

    @settings(max_examples=150, deadline=None, database=None, derandomize=True)
    @given(walks())
    def collect(rounds: list[list[Fix]]) -> None:
        for outcome in replay(BatchMatcher(RULES, PREDICTION), rounds):
            statuses.update(s.value for s in outcome.statuses)
            kinds.update(t.kind for t in outcome.transitions)

    collect()

    assert {"used", "duplicate", "stale", "inaccurate", "mock", "jump", "future"} <= statuses
    assert {"enter", "exit", "approaching"} <= kinds


@PROPERTY
@given(
    st.tuples(*(st.floats(0.0, 1e6) for _ in range(3)), st.floats(0.0, 500.0)),
    st.floats(0.0, 5_000.0),
    st.floats(-60.0, 3_600.0),
)
def test_one_step_of_the_odometer_in_floats_equals_the_array_code(
    clocks: tuple[float, float, float, float], metres: float, seconds: float
) -> None:
    one = _advance_one(clocks, metres, seconds, PREDICTION)
    array = _advance(clocks, Travel(np.array([metres]), np.array([seconds])), PREDICTION)

    assert one == array


def test_a_stop_counts_up_to_the_allowance_in_both() -> None:
    stopped = (1_000.0, 500.0, 480.0, 15.0)  # 15 s into a stop; 20 s allowance

    one = _advance_one(stopped, 0.5, 30.0, PREDICTION)

    assert one == (1_000.5, 505.0, 480.0, 45.0)  # 5 s of the 30 counted, still stopped
    assert one == _advance(stopped, Travel(np.array([0.5]), np.array([30.0])), PREDICTION)


lons = st.floats(-180.0, 180.0)
lats = st.floats(-85.0, 85.0)
nearby = st.floats(-0.05, 0.05)


@PROPERTY
@given(lons, lats, nearby, nearby)
@example(179.99, -16.5, 0.03, 0.001)  # eastwards over the antimeridian
@example(-179.995, 10.0, -0.02, 0.0)  # westwards
def test_metres_between_two_positions_equals_the_local_frame(
    lon0: float, lat0: float, dlon: float, dlat: float
) -> None:
    lon = (lon0 + dlon + 180.0) % 360.0 - 180.0  # may cross the antimeridian
    lat = lat0 + dlat
    x, y = to_local(np.array([lon]), np.array([lat]), lon0, lat0)

    assert _metres_between(lon0, lat0, lon, lat) == math.hypot(x[0], y[0])


@PROPERTY
@given(st.lists(st.tuples(lons, lats), min_size=2, max_size=12), nearby)
def test_a_steps_length_does_not_depend_on_the_other_steps(
    points: list[tuple[float, float]], shrink: float
) -> None:
    # short and long steps mixed: the small-angle sine and np.sin are chosen element by element
    path = np.array(points)
    path[1::2] = path[0:-1:2] + shrink
    lon, lat = path[:, 0], path[:, 1]

    whole = step_lengths_m(lon, lat)
    alone = [float(step_lengths_m(lon[i : i + 2], lat[i : i + 2])[0]) for i in range(len(lon) - 1)]
    pairs = pair_lengths_m(lon[:-1], lat[:-1], lon[1:], lat[1:])

    assert whole.tolist() == alone
    assert pairs.tolist() == alone
