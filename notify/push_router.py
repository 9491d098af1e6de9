"""One ``push`` channel over several providers, chosen by the device's platform.

- ``android`` -> FCM (HTTP v1);
- ``ios`` -> APNs (HTTP/2, JWT) when configured, else FCM (which forwards to APNs with the
  ``apns`` block of the same message);
- ``web`` -> Web Push (VAPID).

A platform without a configured provider is a ``PermanentSendError``: retrying will not help,
and the worker may fall back to email.
"""

from __future__ import annotations

from collections.abc import Mapping

from notify.channel import Channel, OfferMessage, PermanentSendError, SendReceipt

_FALLBACKS = {"ios": ("apns", "fcm"), "android": ("fcm",), "web": ("webpush",)}


class PushRouter:
    name = "push"

    def __init__(self, providers: Mapping[str, Channel]) -> None:
        """``providers`` by name: any of ``fcm``, ``apns``, ``webpush``."""
        unknown = set(providers) - {"fcm", "apns", "webpush"}
        if unknown:
            raise ValueError(f"unknown push providers: {sorted(unknown)}")
        self.providers = dict(providers)

    def provider_for(self, platform: str | None) -> Channel | None:
        for name in _FALLBACKS.get(platform or "", ()):
            if name in self.providers:
                return self.providers[name]
        return None

    def send(self, message: OfferMessage) -> SendReceipt:
        provider = self.provider_for(message.platform)
        if provider is None:
            raise PermanentSendError(
                f"no push provider configured for platform {message.platform!r}"
            )
        return provider.send(message)

    def close(self) -> None:
        for provider in self.providers.values():
            close = getattr(provider, "close", None)
            if close is not None:
                close()
