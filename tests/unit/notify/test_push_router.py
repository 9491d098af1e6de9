"""The push channel picks its provider by the device's platform."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notify.channel import OfferMessage, PermanentSendError, SendReceipt
from notify.push_router import PushRouter


class Provider:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[OfferMessage] = []

    def send(self, message: OfferMessage) -> SendReceipt:
        self.sent.append(message)
        return SendReceipt(self.name)


def _message(platform: str | None) -> OfferMessage:
    return OfferMessage(
        "cpn_1:push", "tok", "t", "b", "10%", "Store", "ABCDE-12345",
        datetime(2026, 11, 23, 9, 5, tzinfo=UTC), 300, platform=platform,
    )  # fmt: skip


def test_each_platform_goes_to_its_provider() -> None:
    fcm, apns, webpush = Provider("fcm"), Provider("apns"), Provider("webpush")
    router = PushRouter({"fcm": fcm, "apns": apns, "webpush": webpush})
    assert router.send(_message("android")).provider_id == "fcm"
    assert router.send(_message("ios")).provider_id == "apns"
    assert router.send(_message("web")).provider_id == "webpush"


def test_ios_goes_through_fcm_when_apns_is_not_configured() -> None:
    router = PushRouter({"fcm": Provider("fcm")})
    assert router.send(_message("ios")).provider_id == "fcm"


def test_a_platform_without_provider_fails_for_good() -> None:
    router = PushRouter({"fcm": Provider("fcm")})
    with pytest.raises(PermanentSendError, match="web"):
        router.send(_message("web"))
    with pytest.raises(ValueError, match="unknown push providers"):
        PushRouter({"pigeon": Provider("pigeon")})
