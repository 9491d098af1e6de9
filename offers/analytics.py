"""Pure analytics: rates, their confidence intervals, lift against the holdout, funnel counts.

Lift is the treated group's rate minus the held-out group's rate, per eligible trigger. Its
confidence interval is Newcombe's hybrid score interval (Newcombe 1998, method 10): the Wilson
score intervals of the two rates combined, which stays inside [-1, 1] and behaves with small
counts and rates near 0 or 1, where the plain normal (Wald) interval does not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from statistics import NormalDist

REDEEM_BUCKETS_MIN = (1, 2, 5, 10, 15, 30, 60)  # upper edges, minutes; the last bucket is open


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, trials: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when there are no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Lift:
    metric: str
    treated: int
    treated_successes: int
    held_out: int
    held_out_successes: int
    treated_rate: float | None
    held_out_rate: float | None
    lift: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float


def lift(
    metric: str,
    treated_successes: int,
    treated: int,
    held_successes: int,
    held: int,
    confidence: float = 0.95,
) -> Lift:
    """Treated rate minus held-out rate with Newcombe's hybrid score interval; ``None`` where a
    group is empty (no estimate is better than a made-up one)."""
    p1 = treated_successes / treated if treated else None
    p2 = held_successes / held if held else None
    if p1 is None or p2 is None:
        return Lift(
            metric,
            treated,
            treated_successes,
            held,
            held_successes,
            p1,
            p2,
            None,
            None,
            None,
            confidence,
        )
    z = z_value(confidence)
    l1, u1 = wilson(treated_successes, treated, z)
    l2, u2 = wilson(held_successes, held, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Lift(
        metric, treated, treated_successes, held, held_successes, p1, p2, d, low, high, confidence
    )


@dataclass(frozen=True, slots=True)
class DecisionFacts:
    """One decision with what followed it, as the funnel counts it."""

    campaign_id: str
    offer_id: str | None
    store_id: str
    decided_at: datetime
    outcome: str
    reason: str | None
    visited: bool = False
    purchased: bool = False
    sent: bool = False  # at least one delivery was attempted
    delivered: bool = False  # a provider accepted at least one delivery
    opened: bool = False
    redeemed: bool = False
    expired: bool = False  # issued, not redeemed, past its expiry
    redeem_minutes: float | None = None


COUNTERS = (
    "triggered",
    "suppressed",
    "held_out",
    "issued",
    "sent",
    "delivered",
    "opened",
    "redeemed",
    "expired",
    "visited",
    "purchased",
)


@dataclass(slots=True)
class FunnelRow:
    key: dict[str, str | None]
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    suppressed_by: dict[str, int] = field(default_factory=dict)

    def add(self, f: DecisionFacts) -> None:
        c = self.counts
        c["triggered"] += 1
        if f.outcome == "suppressed":
            c["suppressed"] += 1
            reason = f.reason or "unknown"
            self.suppressed_by[reason] = self.suppressed_by.get(reason, 0) + 1
            return
        if f.outcome == "held_out":
            c["held_out"] += 1
        elif f.outcome == "issued":
            c["issued"] += 1
            for name in ("sent", "delivered", "opened", "redeemed", "expired"):
                c[name] += int(getattr(f, name))
        c["visited"] += int(f.visited)
        c["purchased"] += int(f.purchased)


GROUPS = ("variant", "store", "hour")


def group_key(f: DecisionFacts, by: Sequence[str]) -> dict[str, str | None]:
    key: dict[str, str | None] = {"campaign": f.campaign_id}
    if "variant" in by:
        key["variant"] = f.offer_id
    if "store" in by:
        key["store"] = f.store_id
    if "hour" in by:
        key["hour"] = f.decided_at.isoformat()[:13] + ":00Z"  # stored instants are UTC
    return key


def funnel(facts: Iterable[DecisionFacts], by: Sequence[str] = ()) -> list[FunnelRow]:
    rows: dict[tuple[tuple[str, str | None], ...], FunnelRow] = {}
    for f in facts:
        key = group_key(f, by)
        ident = tuple(key.items())
        row = rows.get(ident)
        if row is None:
            row = rows[ident] = FunnelRow(key)
        row.add(f)
    return [rows[k] for k in sorted(rows, key=lambda k: tuple(str(v[1] or "") for v in k))]


def redeem_histogram(minutes: Iterable[float]) -> list[dict[str, object]]:
    """Redeemed coupons by minutes from issue to redemption: [0,1), [1,2), ... [60, +inf)."""
    counts = [0] * (len(REDEEM_BUCKETS_MIN) + 1)
    for m in minutes:
        index = next((i for i, edge in enumerate(REDEEM_BUCKETS_MIN) if m < edge), -1)
        counts[index] += 1
    lows = (0, *REDEEM_BUCKETS_MIN)
    highs: tuple[int | None, ...] = (*REDEEM_BUCKETS_MIN, None)
    return [
        {"from_min": lo, "to_min": hi, "count": n}
        for lo, hi, n in zip(lows, highs, counts, strict=True)
    ]


def campaign_lifts(facts: Sequence[DecisionFacts], confidence: float = 0.95) -> list[Lift]:
    """Visit, purchase and redemption lift of one campaign's decisions (the held-out group
    cannot redeem, so redemption lift is the treated redemption rate, shown for completeness)."""
    treated = [f for f in facts if f.outcome == "issued"]
    held = [f for f in facts if f.outcome == "held_out"]
    return [
        lift(
            metric,
            sum(getattr(f, attr) for f in treated),
            len(treated),
            sum(getattr(f, attr) for f in held),
            len(held),
            confidence,
        )
        for metric, attr in (
            ("visit", "visited"),
            ("purchase", "purchased"),
            ("redemption", "redeemed"),
        )
    ]
