"""Which channels carry a new coupon: pure rules, no I/O.

One channel reaches the shopper: the first of ``order`` (push, then email, by default) that the
device can be reached on, that the engine has configured and whose ``marketing_offers``
consent holds now. A push that then fails for good falls back to email (``offers.followups``).
The brand's webhook is not a way to reach the shopper but a copy for the brand's own systems: it
is added whenever it is configured and its consent holds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from consent.domain import Channel

DEFAULT_ORDER = (Channel.PUSH, Channel.EMAIL)


def choose_channels(
    addresses: Mapping[Channel, str | None],
    configured: Collection[str],
    allowed: Callable[[Channel], bool],
    order: Sequence[Channel] = DEFAULT_ORDER,
) -> list[tuple[Channel, str]]:
    chosen: list[tuple[Channel, str]] = []
    for channel in order:
        address = addresses.get(channel)
        if address and channel.value in configured and allowed(channel):
            chosen.append((channel, address))
            break
    webhook = addresses.get(Channel.WEBHOOK)
    if webhook and Channel.WEBHOOK.value in configured and allowed(Channel.WEBHOOK):
        chosen.append((Channel.WEBHOOK, webhook))
    return chosen
