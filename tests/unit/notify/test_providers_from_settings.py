"""Push and webhook channels come from settings: each is off while its settings are unset."""

from __future__ import annotations

import pytest
from py_vapid import Vapid02

from core.clock import SystemClock
from core.settings import Environment, Settings
from notify.providers import build_remote_channels
from notify.push_router import PushRouter
from notify.webhook import WebhookChannel


def _settings(**values: object) -> Settings:
    return Settings(environment=Environment.TEST, **values)  # type: ignore[arg-type]


def test_nothing_configured_means_no_push_and_no_webhook() -> None:
    assert build_remote_channels(_settings(), SystemClock()) == {}


def test_vapid_settings_turn_web_push_on_and_a_webhook_needs_its_secret() -> None:
    key = Vapid02()
    key.generate_keys()
    channels = build_remote_channels(
        _settings(
            vapid_private_key=key.private_pem().decode(),
            vapid_subject="mailto:ops@example.com",
            webhook_url="https://brand.example/hooks",
            webhook_secret="whsec_" + "x" * 32,
        ),
        SystemClock(),
    )
    push = channels["push"]
    assert isinstance(push, PushRouter) and set(push.providers) == {"webpush"}
    assert isinstance(channels["webhook"], WebhookChannel)
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        build_remote_channels(_settings(webhook_url="https://brand.example/h"), SystemClock())


def test_heartbeat_must_fit_twice_in_the_lease() -> None:
    with pytest.raises(ValueError, match="half"):
        _settings(scheduler_lease_ttl_s=5, scheduler_heartbeat_s=3)
