"""Production settings refuse insecure defaults (core/settings.py); ManualClock (core/clock.py)."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core.clock import ManualClock
from core.settings import (
    INSECURE_KEYS,
    INSECURE_SECRET,
    MIN_SECRET_LENGTH,
    EmailBackend,
    Environment,
    Settings,
)

KEY_ENV_NAMES = [f"OFFER_ENGINE_{role.upper()}_API_KEY" for role in INSECURE_KEYS]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OFFER_ENGINE_* variable of the caller's shell and no stray .env reach these tests."""
    for name in list(os.environ):
        if name.startswith("OFFER_ENGINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def strong_values() -> dict[str, Any]:
    values = {"secret_key": secrets.token_urlsafe(48)}
    values.update({f"{role}_api_key": secrets.token_urlsafe(24) for role in INSECURE_KEYS})
    return values


def test_production_with_every_default_refuses_naming_each_setting() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(environment=Environment.PRODUCTION)

    message = str(caught.value)
    assert "insecure settings for environment 'production'" in message
    assert "OFFER_ENGINE_SECRET_KEY" in message
    for name in KEY_ENV_NAMES:
        assert name in message


def test_production_is_the_default_environment_so_a_bare_start_refuses() -> None:
    with pytest.raises(ValidationError, match="OFFER_ENGINE_SECRET_KEY"):
        Settings()


def test_production_names_only_the_settings_still_insecure() -> None:
    values = strong_values()
    values["pos_api_key"] = INSECURE_KEYS["pos"]

    with pytest.raises(ValidationError) as caught:
        Settings(environment=Environment.PRODUCTION, **values)

    message = str(caught.value)
    assert "OFFER_ENGINE_POS_API_KEY" in message
    assert "OFFER_ENGINE_SECRET_KEY" not in message
    assert "OFFER_ENGINE_SDK_API_KEY" not in message


def test_production_refuses_a_short_secret_even_if_not_the_default() -> None:
    values = strong_values()
    values["secret_key"] = "x" * (MIN_SECRET_LENGTH - 1)

    with pytest.raises(ValidationError, match=f"at least {MIN_SECRET_LENGTH} characters"):
        Settings(environment=Environment.PRODUCTION, **values)


def test_production_refuses_a_short_api_key() -> None:
    values = strong_values()
    values["manager_api_key"] = "short-key"

    with pytest.raises(ValidationError, match="OFFER_ENGINE_MANAGER_API_KEY"):
        Settings(environment=Environment.PRODUCTION, **values)


def test_production_accepts_long_random_values() -> None:
    values = strong_values()

    settings = Settings(environment=Environment.PRODUCTION, **values)

    assert settings.secret_key.get_secret_value() == values["secret_key"]
    assert settings.sdk_api_key.get_secret_value() == values["sdk_api_key"]
    assert values["secret_key"] not in repr(settings), "secrets are not shown"


@pytest.mark.parametrize("environment", [Environment.TEST, Environment.DEMO])
def test_test_and_demo_accept_the_defaults(environment: Environment) -> None:
    settings = Settings(environment=environment)

    assert settings.environment is environment
    assert settings.secret_key.get_secret_value() == INSECURE_SECRET
    assert settings.pos_api_key.get_secret_value() == INSECURE_KEYS["pos"]


def test_settings_are_read_from_prefixed_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OFFER_ENGINE_ENVIRONMENT", "test")
    monkeypatch.setenv("OFFER_ENGINE_REDIS_URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("OFFER_ENGINE_DATABASE_URL", "postgresql+psycopg://u@db/offers")
    monkeypatch.setenv("OFFER_ENGINE_SMTP_PORT", "2525")
    monkeypatch.setenv("OFFER_ENGINE_RUN_SCHEDULER", "false")
    monkeypatch.setenv("OFFER_ENGINE_EMAIL_BACKEND", "file")
    monkeypatch.setenv("OFFER_ENGINE_MAX_PING_ACCURACY_M", "42.5")

    settings = Settings()

    assert settings.environment is Environment.TEST
    assert settings.redis_url == "redis://cache.internal:6380/2"
    assert settings.uses_shared_state is True
    assert settings.database_url == "postgresql+psycopg://u@db/offers"
    assert settings.smtp_port == 2525
    assert settings.run_scheduler is False
    assert settings.email_backend is EmailBackend.FILE
    assert settings.max_ping_accuracy_m == 42.5


def test_production_secrets_can_come_from_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = strong_values()
    for field, value in values.items():
        monkeypatch.setenv(f"OFFER_ENGINE_{field.upper()}", value)

    settings = Settings()

    assert settings.environment is Environment.PRODUCTION
    assert settings.compliance_api_key.get_secret_value() == values["compliance_api_key"]


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("ENVIRONMENT", "production")

    settings = Settings(environment=Environment.TEST)

    assert settings.redis_url is None
    assert settings.uses_shared_state is False


def test_an_invalid_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFER_ENGINE_ENVIRONMENT", "test")
    monkeypatch.setenv("OFFER_ENGINE_SMTP_PORT", "0")

    with pytest.raises(ValidationError, match="smtp_port"):
        Settings()


def test_a_dot_env_file_in_the_working_directory_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text(
        "OFFER_ENGINE_ENVIRONMENT=demo\nOFFER_ENGINE_SMTP_HOST=mail.from-dotenv\n"
        "OFFER_ENGINE_SMTP_PORT=2526\n"
    )
    monkeypatch.setenv("OFFER_ENGINE_SMTP_PORT", "2527")

    settings = Settings()

    assert settings.environment is Environment.DEMO
    assert settings.smtp_host == "mail.from-dotenv"
    assert settings.smtp_port == 2527


def test_settings_are_frozen() -> None:
    settings = Settings(environment=Environment.TEST)

    with pytest.raises(ValidationError):
        settings.smtp_port = 26  # type: ignore[misc]


# --- ManualClock ----------------------------------------------------------------------------

START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_manual_clock_refuses_a_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2026, 11, 23, 9, 0))  # noqa: DTZ001


def test_manual_clock_stands_still_until_told_to_move() -> None:
    clock = ManualClock(START)

    assert clock.now() == START
    assert clock.now() == START


def test_manual_clock_stores_the_start_in_utc() -> None:
    berlin_winter = timezone(timedelta(hours=1))
    clock = ManualClock(datetime(2026, 11, 23, 10, 0, tzinfo=berlin_winter))

    assert clock.now() == START
    assert clock.now().utcoffset() == timedelta(0)


def test_manual_clock_without_a_start_begins_at_an_aware_now() -> None:
    before = datetime.now(UTC)
    clock = ManualClock()

    assert clock.now().tzinfo is not None
    assert clock.now() >= before


def test_manual_clock_advances_by_the_delta() -> None:
    clock = ManualClock(START)

    assert clock.advance(timedelta(minutes=5)) == START + timedelta(minutes=5)
    assert clock.advance(timedelta(0)) == START + timedelta(minutes=5)
    assert clock.now() == START + timedelta(minutes=5)


def test_manual_clock_refuses_to_advance_backwards_and_stays_put() -> None:
    clock = ManualClock(START)

    with pytest.raises(ValueError, match="backwards"):
        clock.advance(timedelta(seconds=-1))
    assert clock.now() == START


def test_manual_clock_set_refuses_a_naive_instant() -> None:
    clock = ManualClock(START)

    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2026, 11, 24, 9, 0))  # noqa: DTZ001
    assert clock.now() == START


def test_manual_clock_set_jumps_forward_in_utc() -> None:
    clock = ManualClock(START)
    later = datetime(2026, 11, 24, 12, 0, tzinfo=timezone(timedelta(hours=2)))

    clock.set(later)

    assert clock.now() == later
    assert clock.now().utcoffset() == timedelta(0)


def test_manual_clock_set_refuses_going_backwards() -> None:
    clock = ManualClock(START)

    with pytest.raises(ValueError, match="backwards"):
        clock.set(START - timedelta(seconds=1))
