"""Build the push and webhook channels from settings: each provider is off while unset."""

from __future__ import annotations

import json
import logging
from typing import Any

from core.clock import Clock
from core.settings import Settings
from notify.apns import ApnsChannel
from notify.channel import Channel
from notify.fcm import FcmChannel
from notify.push_router import PushRouter
from notify.webhook import WebhookChannel
from notify.webpush import WebPushChannel

log = logging.getLogger(__name__)


def build_push_providers(settings: Settings, clock: Clock) -> dict[str, Channel]:
    providers: dict[str, Channel] = {}
    if settings.fcm_project_id and settings.fcm_service_account_file:
        info: dict[str, Any] = json.loads(settings.fcm_service_account_file.read_text())
        providers["fcm"] = FcmChannel(
            settings.fcm_project_id, info, settings.fcm_base_url, clock=clock
        )
    apns = (
        settings.apns_team_id,
        settings.apns_key_id,
        settings.apns_key_file,
        settings.apns_topic,
    )
    if all(apns):
        assert settings.apns_key_file is not None and settings.apns_topic is not None
        providers["apns"] = ApnsChannel(
            str(settings.apns_team_id),
            str(settings.apns_key_id),
            settings.apns_key_file.read_text(),
            settings.apns_topic,
            settings.apns_base_url,
            clock=clock,
        )
    elif any(apns):
        log.warning("APNs is off: team id, key id, key file and topic are all needed")
    if settings.vapid_private_key and settings.vapid_subject:
        providers["webpush"] = WebPushChannel(
            settings.vapid_private_key.get_secret_value(),
            settings.vapid_subject,
            clock=clock,
        )
    return providers


def build_remote_channels(settings: Settings, clock: Clock) -> dict[str, Channel]:
    """``push`` (when any push provider is configured) and ``webhook`` (when its URL is set)."""
    channels: dict[str, Channel] = {}
    providers = build_push_providers(settings, clock)
    if providers:
        channels["push"] = PushRouter(providers)
    if settings.webhook_url:
        if settings.webhook_secret is None:
            raise ValueError("OFFER_ENGINE_WEBHOOK_URL needs OFFER_ENGINE_WEBHOOK_SECRET")
        channels["webhook"] = WebhookChannel(
            settings.webhook_url, settings.webhook_secret.get_secret_value(), clock=clock
        )
    return channels
