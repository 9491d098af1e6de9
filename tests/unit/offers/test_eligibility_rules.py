"""Pure eligibility and validity rules (offers/domain.py): validity sizing, schedule refusals,
the headline refusal, lockout windows and hot-state key shapes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offers.domain import (
    CODE_LENGTH,
    CROCKFORD_ALPHABET,
    CampaignWindow,
    InvalidCampaign,
    Refusal,
    Validity,
    ValidityRule,
    cap_key,
    check_validity,
    cooldown_key,
    headline_refusal,
    lockout_bucket,
    shopper_cap_key,
    window_refusal,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TRAVEL = Validity(ValidityRule.TRAVEL, 10, decision_window_minutes=5, max_valid_minutes=30)


def test_a_code_carries_at_least_forty_bits() -> None:
    assert CODE_LENGTH * math.log2(len(CROCKFORD_ALPHABET)) >= 40


@pytest.mark.parametrize(
    ("eta_s", "minutes"),
    [(None, 5), (0, 5), (1, 6), (60, 6), (61, 7), (7 * 60, 12), (25 * 60, 30), (86_400, 30)],
)
def test_travel_validity_is_the_eta_plus_the_window_capped(
    eta_s: float | None, minutes: int
) -> None:
    assert TRAVEL.minutes_for(eta_s) == minutes
    assert TRAVEL.expiry(NOW, eta_s) == NOW + timedelta(minutes=minutes)


def test_the_travel_window_defaults_to_valid_minutes() -> None:
    rule = Validity(ValidityRule.TRAVEL, 10, max_valid_minutes=30)
    assert rule.minutes_for(120) == 12


@given(st.floats(min_value=0, max_value=10 * 86_400), st.floats(min_value=0, max_value=600))
def test_travel_validity_stays_in_bounds_and_grows_with_the_eta(eta: float, more: float) -> None:
    assert 5 <= TRAVEL.minutes_for(eta) <= 30
    assert TRAVEL.minutes_for(eta + more) >= TRAVEL.minutes_for(eta)


def test_fixed_validity_ignores_the_eta() -> None:
    assert Validity(ValidityRule.FIXED, 15).minutes_for(3_600) == 15


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (Validity(ValidityRule.TRAVEL, 10), "needs max_valid_minutes"),
        (Validity(ValidityRule.TRAVEL, 10, 40, 30), "must not exceed max_valid_minutes"),
        (Validity(ValidityRule.FIXED, 0), "valid_minutes must be between"),
        (Validity(ValidityRule.TRAVEL, 10, 5, 5_000), "max_valid_minutes must be between"),
    ],
)
def test_an_impossible_validity_rule_is_refused(rule: Validity, message: str) -> None:
    with pytest.raises(InvalidCampaign, match=message):
        check_validity(rule)


@pytest.mark.parametrize(
    ("campaign", "refusal"),
    [
        (CampaignWindow("active", None, None), None),
        (CampaignWindow("paused", None, None), Refusal.CAMPAIGN_INACTIVE),
        (CampaignWindow("active", NOW + timedelta(seconds=1), None), Refusal.CAMPAIGN_NOT_STARTED),
        (CampaignWindow("active", NOW, None), None),
        (CampaignWindow("active", None, NOW), Refusal.CAMPAIGN_ENDED),
        (CampaignWindow("active", None, NOW + timedelta(seconds=1)), None),
    ],
)
def test_the_campaign_window_names_its_refusal(
    campaign: CampaignWindow, refusal: Refusal | None
) -> None:
    assert window_refusal(campaign, NOW) == refusal
    assert (refusal is None) == campaign.is_live(NOW)


def test_the_headline_refusal_prefers_what_concerns_the_shopper() -> None:
    assert (
        headline_refusal([Refusal.CAMPAIGN_DAILY_CAP, Refusal.SHOPPER_DAILY_LIMIT])
        == Refusal.SHOPPER_DAILY_LIMIT
    )
    assert (
        headline_refusal([Refusal.BUDGET_COUPONS, Refusal.CAMPAIGN_ENDED]) == Refusal.BUDGET_COUPONS
    )


@given(
    st.integers(min_value=0, max_value=4_000_000_000), st.integers(min_value=10, max_value=86_400)
)
def test_a_lockout_window_ends_within_its_length(epoch: int, window_s: int) -> None:
    bucket, retry_after = lockout_bucket(datetime.fromtimestamp(epoch, UTC), window_s)
    assert 1 <= retry_after <= window_s
    later = datetime.fromtimestamp(epoch + retry_after, UTC)
    assert lockout_bucket(later, window_s)[0] == bucket + 1


def test_a_shoppers_keys_share_one_hash_slot_tag() -> None:
    day = NOW.date()
    keys = [
        cap_key("sub_1", "cmp_1", day),
        shopper_cap_key("sub_1", day),
        cooldown_key("sub_1", "st_1"),
    ]
    assert all("{sub_1}" in k for k in keys)
