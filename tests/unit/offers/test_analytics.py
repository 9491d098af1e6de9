"""Analytics against hand-computed and published figures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from offers.analytics import (
    DecisionFacts,
    campaign_lifts,
    funnel,
    lift,
    redeem_histogram,
    wilson,
    z_value,
)

Z95 = 1.959964


def test_wilson_interval_matches_hand_computation() -> None:
    # 30/100: centre (0.3 + z²/200) / (1 + z²/100) = 0.307399, half-width 0.088450
    low, high = wilson(30, 100, Z95)
    assert low == pytest.approx(0.21895, abs=1e-5)
    assert high == pytest.approx(0.39585, abs=1e-5)
    # 5/50: centre 0.128539, half-width 0.085064
    assert wilson(5, 50, Z95) == pytest.approx((0.043475, 0.213603), abs=1e-5)
    assert wilson(0, 0, Z95) == (0.0, 1.0)


def test_lift_interval_is_newcombes_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80, method 10.
    result = lift("visit", 56, 70, 48, 80)
    assert result.lift == pytest.approx(0.2)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.0524, 0.3339), abs=5e-5)


def test_lift_with_a_known_holdout_split() -> None:
    # 100 treated of whom 30 visited, 50 held out of whom 5 visited:
    # lift = 0.30 - 0.10 = 0.20; low = 0.2 - sqrt((0.3-0.21895)² + (0.213603-0.1)²) = 0.06045,
    # high = 0.2 + sqrt((0.39585-0.3)² + (0.1-0.043475)²) = 0.31127.
    result = lift("visit", 30, 100, 5, 50)
    assert (result.treated_rate, result.held_out_rate) == (0.3, 0.1)
    assert result.lift == pytest.approx(0.2)
    assert result.ci_low == pytest.approx(0.06045, abs=1e-4)
    assert result.ci_high == pytest.approx(0.31127, abs=1e-4)


def test_no_estimate_without_a_held_out_group() -> None:
    result = lift("visit", 3, 10, 0, 0)
    assert result.treated_rate == 0.3 and result.lift is None and result.ci_low is None


def test_z_value_of_the_usual_levels() -> None:
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_value(0.9) == pytest.approx(1.644854, abs=1e-6)


AT = datetime(2026, 12, 1, 10, 15, tzinfo=UTC)


def fact(outcome: str, **kw: object) -> DecisionFacts:
    values: dict[str, object] = {
        "campaign_id": "c1",
        "offer_id": "A" if outcome == "issued" else None,
        "store_id": "s1",
        "decided_at": AT,
        "outcome": outcome,
        "reason": None,
    }
    values.update(kw)
    return DecisionFacts(**values)  # type: ignore[arg-type]


def test_funnel_counts_each_stage_and_suppression_reason() -> None:
    facts = [
        fact("issued", sent=True, delivered=True, opened=True, redeemed=True, visited=True),
        fact("issued", sent=True, delivered=False, expired=True),
        fact("issued", offer_id="B", sent=True, delivered=True, visited=True, purchased=True),
        fact("held_out", visited=True),
        fact("held_out"),
        fact("suppressed", reason="cap"),
        fact("suppressed", reason="cap"),
        fact("suppressed", reason="no_consent", store_id="s2"),
    ]
    [row] = funnel(facts)
    assert row.counts == {
        "triggered": 8,
        "suppressed": 3,
        "held_out": 2,
        "issued": 3,
        "sent": 3,
        "delivered": 2,
        "opened": 1,
        "redeemed": 1,
        "expired": 1,
        "visited": 3,
        "purchased": 1,
    }
    assert row.suppressed_by == {"cap": 2, "no_consent": 1}
    by_variant = {r.key["variant"]: r.counts for r in funnel(facts, ["variant"])}
    assert by_variant["A"]["issued"] == 2 and by_variant["B"]["issued"] == 1
    assert by_variant[None]["held_out"] == 2 and by_variant[None]["suppressed"] == 3
    by_store = {r.key["store"]: r.counts["triggered"] for r in funnel(facts, ["store"])}
    assert by_store == {"s1": 7, "s2": 1}
    [hourly] = funnel(facts, ["hour"])
    assert hourly.key["hour"] == "2026-12-01T10:00Z"


def test_campaign_lifts_compare_the_issued_with_the_held_out() -> None:
    facts = [fact("issued", visited=i < 3, redeemed=i < 2) for i in range(4)]
    facts += [fact("held_out", visited=i < 1) for i in range(4)]
    facts += [fact("suppressed", reason="cap", visited=True)]  # not part of the experiment
    visit, purchase, redemption = campaign_lifts(facts)
    assert (visit.treated, visit.treated_successes, visit.held_out, visit.held_out_successes) == (
        4,
        3,
        4,
        1,
    )
    assert visit.lift == pytest.approx(0.5)
    assert purchase.lift == 0.0
    assert redemption.treated_rate == 0.5 and redemption.held_out_rate == 0.0


def test_time_to_redeem_histogram_buckets() -> None:
    buckets = redeem_histogram([0.5, 0.99, 1.0, 4.9, 5.0, 14.0, 59.0, 61.0, 300.0])
    counts = {(b["from_min"], b["to_min"]): b["count"] for b in buckets}
    assert counts == {
        (0, 1): 2,
        (1, 2): 1,
        (2, 5): 1,
        (5, 10): 1,
        (10, 15): 1,
        (15, 30): 0,
        (30, 60): 1,
        (60, None): 2,
    }
