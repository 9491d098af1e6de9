"""Holdout draw, fixed weights and Thompson sampling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from offers.experiments import (
    VariantStats,
    choose_fixed,
    choose_thompson,
    choose_variant,
    holdout_draw,
    holdout_secret,
    is_held_out,
)
from offers.templates import InvalidTemplate, TemplateContext, check_template, render

SECRET = holdout_secret("a-test-secret-of-enough-length-000000")


def test_holdout_is_deterministic_per_shopper_and_campaign() -> None:
    first = holdout_draw(SECRET, "cmp_1", "sub_1")
    assert 0 <= first < 1
    assert holdout_draw(SECRET, "cmp_1", "sub_1") == first
    assert holdout_draw(SECRET, "cmp_2", "sub_1") != first
    assert holdout_draw(holdout_secret("another-secret-000000000000000000"), "cmp_1", "sub_1") != (
        first
    )


def test_holdout_share_is_close_to_the_configured_share() -> None:
    held = sum(is_held_out(SECRET, "cmp_1", f"sub_{i}", 0.1) for i in range(20_000))
    # binomial(20000, 0.1): sd = 42; 5 sd either side
    assert 2000 - 212 < held < 2000 + 212
    assert not any(is_held_out(SECRET, "cmp_1", f"sub_{i}", 0.0) for i in range(1000))


def test_fixed_weights_are_followed() -> None:
    rng = np.random.default_rng(7)
    variants = [VariantStats("A", 3), VariantStats("B", 1), VariantStats("C", 0)]
    counts = Counter(choose_fixed(variants, rng) for _ in range(8000))
    assert counts["C"] == 0
    assert 5700 < counts["A"] < 6300  # 6000 expected, sd 39


def test_thompson_prefers_the_variant_that_persuades() -> None:
    rng = np.random.default_rng(42)
    good = VariantStats("good", 1, trials=200, redeemed=60, visited=100)
    poor = VariantStats("poor", 1, trials=200, redeemed=10, visited=30)
    counts = Counter(choose_thompson([poor, good], rng) for _ in range(500))
    assert counts["good"] > 490


def test_thompson_explores_without_data_and_is_seedable() -> None:
    variants = [VariantStats("A", 1), VariantStats("B", 1)]
    picks = [choose_variant("adaptive", variants, np.random.default_rng(1)) for _ in range(3)]
    assert len(set(picks)) == 1  # same seed, same choice
    rng = np.random.default_rng(3)
    counts = Counter(choose_variant("adaptive", variants, rng) for _ in range(2000))
    assert 850 < counts["A"] < 1150


def test_choose_variant_needs_a_variant() -> None:
    with pytest.raises(ValueError, match="at least one"):
        choose_variant("fixed", [], np.random.default_rng())


def test_templates_fill_whitelisted_fields_only() -> None:
    from datetime import UTC, datetime

    context = TemplateContext(
        "Corner Cafe", "30% off", 15, datetime(2026, 1, 1, 9, 5, tzinfo=UTC), "X"
    )
    assert render("{discount} at {store} until {expires_at}", context) == (
        "30% off at Corner Cafe until 09:05 UTC"
    )
    assert render("{{literal}} {minutes} min", context) == "{literal} 15 min"
    for bad, message in [
        ("{__class__}", "unknown field"),
        ("{store.__class__}", "unknown field"),
        ("{store[0]}", "unknown field"),
        ("{store!r}", "no format"),
        ("{store:>10}", "no format"),
        ("{store", "brace"),
    ]:
        with pytest.raises(InvalidTemplate, match=message):
            check_template(bad)
