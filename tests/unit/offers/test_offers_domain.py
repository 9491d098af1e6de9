"""Pure offer rules (offers/domain.py): coupon codes, validity, campaign liveness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offers.domain import (
    CODE_LENGTH,
    CROCKFORD_ALPHABET,
    MAX_VALID_MINUTES,
    CampaignWindow,
    InvalidCampaign,
    coupon_expiry,
    format_code,
    new_coupon_code,
    normalise_code,
    remaining_seconds,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

codes = st.text(alphabet=CROCKFORD_ALPHABET, min_size=CODE_LENGTH, max_size=CODE_LENGTH)
instants = st.datetimes(
    # hypothesis wants naive bounds and attaches the zone itself
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


# --- coupon codes ---------------------------------------------------------------------------


def test_a_new_code_has_ten_crockford_symbols() -> None:
    code = new_coupon_code()

    assert len(code) == 10 == CODE_LENGTH
    assert set(code) <= set(CROCKFORD_ALPHABET)


def test_the_alphabet_leaves_out_letters_that_are_misheard() -> None:
    assert len(CROCKFORD_ALPHABET) == 32 == len(set(CROCKFORD_ALPHABET))
    assert not set("ILOU") & set(CROCKFORD_ALPHABET)


def test_a_thousand_new_codes_are_all_distinct_and_valid() -> None:
    generated = [new_coupon_code() for _ in range(1_000)]

    assert len(set(generated)) == 1_000
    assert all(len(c) == CODE_LENGTH and set(c) <= set(CROCKFORD_ALPHABET) for c in generated)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("abcde12345", "ABCDE12345"),
        ("ABCDE-12345", "ABCDE12345"),
        ("abcde - 12345", "ABCDE12345"),
        ("  ABCDE12345\n", "ABCDE12345"),
        ("i1l1I1L1oO", "1111111100"),
        ("Oo-Il", "0011"),
    ],
)
def test_normalise_code_reads_what_a_cashier_typed(typed: str, stored: str) -> None:
    assert normalise_code(typed) == stored


def test_format_code_splits_the_code_in_two_groups() -> None:
    assert format_code("ABCDE12345") == "ABCDE-12345"


@given(codes)
def test_a_formatted_lower_case_code_normalises_back_to_itself(code: str) -> None:
    assert normalise_code(format_code(code).lower()) == code


@given(codes)
def test_normalising_a_stored_code_changes_nothing(code: str) -> None:
    assert normalise_code(code) == code


# --- validity -------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [0, -1, MAX_VALID_MINUTES + 1, 10_000])
def test_coupon_expiry_refuses_out_of_range_minutes(minutes: int) -> None:
    with pytest.raises(InvalidCampaign, match="valid_minutes must be between 1 and 1440"):
        coupon_expiry(NOW, minutes)


@pytest.mark.parametrize("minutes", [1, 30, MAX_VALID_MINUTES])
def test_coupon_expiry_is_issue_time_plus_minutes(minutes: int) -> None:
    assert coupon_expiry(NOW, minutes) == NOW + timedelta(minutes=minutes)


def test_max_validity_is_one_day() -> None:
    assert MAX_VALID_MINUTES == 1440


@given(instants, instants)
def test_remaining_seconds_is_never_negative(expires_at: datetime, now: datetime) -> None:
    remaining = remaining_seconds(expires_at, now)

    assert remaining >= 0
    assert remaining <= max(0.0, (expires_at - now).total_seconds())


def test_remaining_seconds_counts_down_and_stops_at_zero() -> None:
    expires = NOW + timedelta(minutes=2)

    assert remaining_seconds(expires, NOW) == 120
    assert remaining_seconds(expires, NOW + timedelta(seconds=119)) == 1
    assert remaining_seconds(expires, expires) == 0
    assert remaining_seconds(expires, expires + timedelta(hours=1)) == 0


# --- campaign liveness ----------------------------------------------------------------------

START = NOW
END = NOW + timedelta(days=7)


def window(
    status: str = "active", starts_at: datetime | None = START, ends_at: datetime | None = END
) -> CampaignWindow:
    return CampaignWindow(status, starts_at, ends_at)


def test_a_paused_campaign_is_not_live_even_inside_its_window() -> None:
    assert window("paused").is_live(START + timedelta(days=1)) is False


@pytest.mark.parametrize("status", ["draft", "ended", "ACTIVE", ""])
def test_only_the_active_status_is_live(status: str) -> None:
    assert window(status).is_live(START + timedelta(days=1)) is False


def test_before_the_start_it_is_not_live() -> None:
    assert window().is_live(START - timedelta(microseconds=1)) is False


def test_the_start_instant_is_live() -> None:
    assert window().is_live(START) is True


def test_inside_the_window_it_is_live() -> None:
    assert window().is_live(START + timedelta(days=3)) is True


def test_the_end_instant_is_excluded() -> None:
    assert window().is_live(END - timedelta(microseconds=1)) is True
    assert window().is_live(END) is False
    assert window().is_live(END + timedelta(days=1)) is False


def test_an_open_ended_window_is_live_from_its_start_on() -> None:
    assert window(starts_at=None, ends_at=None).is_live(NOW - timedelta(days=3650)) is True
    assert window(ends_at=None).is_live(START + timedelta(days=3650)) is True
    assert window(ends_at=None).is_live(START - timedelta(seconds=1)) is False


@given(instants)
def test_liveness_agrees_with_the_half_open_interval(now: datetime) -> None:
    assert window().is_live(now) is (START <= now < END)
