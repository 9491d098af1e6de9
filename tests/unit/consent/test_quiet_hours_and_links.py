"""Pure rules: quiet hours in the shopper's zone, and the signed links' claims."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from consent.domain import Channel
from consent.optin import ConsentLinks, LinkExpired, LinkRefused
from consent.preferences import OfferPreferences, check_timezone, parse_hhmm

SECRET = "unit-test-secret-of-at-least-32-characters"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def helsinki(start: str, end: str) -> OfferPreferences:
    return OfferPreferences(
        quiet_start=parse_hhmm(start), quiet_end=parse_hhmm(end), timezone="Europe/Helsinki"
    )


@pytest.mark.parametrize(
    ("utc", "quiet"),
    [
        ("19:59", False),  # 21:59 in Helsinki
        ("20:00", True),  # 22:00: start is inside
        ("23:30", True),  # 01:30, after midnight
        ("04:59", True),  # 06:59
        ("05:00", False),  # 07:00: end is outside
        ("10:00", False),
    ],
)
def test_quiet_hours_over_midnight_in_the_shoppers_zone(utc: str, quiet: bool) -> None:
    at = datetime.combine(NOW.date(), parse_hhmm(utc), tzinfo=UTC)
    assert helsinki("22:00", "07:00").quiet_at(at) is quiet


def test_quiet_hours_within_a_day_and_none() -> None:
    prefs = helsinki("12:00", "13:00")
    assert prefs.quiet_at(NOW.replace(hour=10, minute=30))  # 12:30 local
    assert not prefs.quiet_at(NOW.replace(hour=11))  # 13:00 local
    assert not OfferPreferences().quiet_at(NOW)


def test_quiet_hours_follow_summer_time() -> None:
    prefs = helsinki("22:00", "23:00")
    summer = datetime(2026, 7, 1, 19, 30, tzinfo=UTC)  # 22:30 in Helsinki (UTC+3)
    winter = datetime(2026, 1, 15, 19, 30, tzinfo=UTC)  # 21:30 in Helsinki (UTC+2)
    assert prefs.quiet_at(summer) and not prefs.quiet_at(winter)


def test_the_shoppers_day_is_their_own() -> None:
    prefs = OfferPreferences(timezone="Pacific/Honolulu")
    assert prefs.local_day(NOW).isoformat() == "2026-11-22"


@pytest.mark.parametrize("bad", ["24:00", "7:00", "07:60", "0700", "", "07:00:00"])
def test_times_of_day_are_hh_mm(bad: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm(bad)
    assert parse_hhmm("00:00") == time(0, 0)


@pytest.mark.parametrize("bad", ["Mars/Base", "../etc/passwd", "Europe/", "  "])
def test_time_zones_are_iana_names(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        check_timezone(bad)
    assert check_timezone("America/Argentina/Buenos_Aires")


def test_a_confirmation_link_names_its_request_and_expires_on_the_engines_clock() -> None:
    links = ConsentLinks(SECRET, "https://offers.example/", timedelta(hours=48))
    url, expires = links.confirm_url("sub_1", 42, NOW)
    assert url.startswith("https://offers.example/v1/consent/confirm?token=")
    assert expires == NOW + timedelta(hours=48)
    token = url.split("token=", 1)[1]
    claims = links.read_confirm(token, NOW + timedelta(hours=47))
    assert (claims.subject_id, claims.event_id) == ("sub_1", 42)
    with pytest.raises(LinkExpired):
        links.read_confirm(token, expires)
    with pytest.raises(LinkRefused):
        links.read_unsubscribe(token)  # another audience


def test_an_unsubscribe_link_is_bound_to_subject_and_channel() -> None:
    links = ConsentLinks(SECRET, "https://offers.example")
    url = links.unsubscribe_url("sub_2", Channel.EMAIL, NOW)
    token = url.split("token=", 1)[1]
    assert links.read_unsubscribe(token) == ("sub_2", Channel.EMAIL)
    other = ConsentLinks("x" * 40, "https://offers.example")
    with pytest.raises(LinkRefused):
        other.read_unsubscribe(token)
    with pytest.raises(LinkRefused):
        links.read_confirm(token, NOW)
