"""Which channels carry a new coupon: one that reaches the shopper (push first), plus the brand's
webhook copy; consent and configuration decide."""

from __future__ import annotations

from consent.domain import Channel
from offers.channel_choice import choose_channels

ALL = {"push", "email", "webhook"}
ADDRESSES = {Channel.PUSH: "tok", Channel.EMAIL: "a@example.com", Channel.WEBHOOK: "sub_1"}


def test_push_first_when_reachable_configured_and_consented() -> None:
    chosen = choose_channels(ADDRESSES, ALL, lambda c: True)
    assert chosen == [(Channel.PUSH, "tok"), (Channel.WEBHOOK, "sub_1")]


def test_email_when_push_consent_is_missing() -> None:
    chosen = choose_channels(ADDRESSES, ALL, lambda c: c is not Channel.PUSH)
    assert chosen[0] == (Channel.EMAIL, "a@example.com")


def test_email_when_the_device_has_no_push_token_or_push_is_not_configured() -> None:
    no_token = {**ADDRESSES, Channel.PUSH: None}
    assert choose_channels(no_token, ALL, lambda c: True)[0][0] is Channel.EMAIL
    assert choose_channels(ADDRESSES, {"email"}, lambda c: True) == [
        (Channel.EMAIL, "a@example.com")
    ]


def test_nothing_without_any_consent() -> None:
    assert choose_channels(ADDRESSES, ALL, lambda c: False) == []
