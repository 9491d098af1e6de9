"""Console session tokens: bound to the manager key, the secret and the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from api.console_auth import issue_session, key_fingerprint, manager_actor, read_session
from core.errors import Unauthenticated
from core.settings import Environment, Settings

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _settings(key: str = "manager-key-0000000001", secret: str = "s" * 40) -> Settings:
    return Settings(
        environment=Environment.TEST,
        manager_api_key=SecretStr(key),
        secret_key=SecretStr(secret),
    )


def test_a_session_names_the_key_by_fingerprint_only() -> None:
    settings = _settings()
    token, expires = issue_session(settings, NOW)
    assert expires == NOW + timedelta(hours=8)
    actor = read_session(settings, token, NOW, "GET", None)
    assert (
        actor == manager_actor(settings) == f"manager:{key_fingerprint('manager-key-0000000001')}"
    )
    assert "manager-key" not in token and len(actor) == len("manager:") + 12


def test_rotating_the_key_or_the_secret_ends_sessions() -> None:
    token, _ = issue_session(_settings(), NOW)
    with pytest.raises(Unauthenticated, match="manager key changed"):
        read_session(_settings(key="manager-key-0000000002"), token, NOW, "GET", None)
    with pytest.raises(Unauthenticated, match="not valid"):
        read_session(_settings(secret="t" * 40), token, NOW, "GET", None)


def test_unsafe_methods_need_the_marker_and_time_is_checked() -> None:
    settings = _settings()
    token, expires = issue_session(settings, NOW)
    with pytest.raises(Unauthenticated, match="X-Console"):
        read_session(settings, token, NOW, "POST", None)
    assert read_session(settings, token, NOW, "POST", "1")
    with pytest.raises(Unauthenticated, match="expired"):
        read_session(settings, token, expires, "GET", None)
