"""Guessing lockout at the till: failed code lookups counted per terminal and per IP address in
the hot state (shared by every API process), in fixed windows of the engine's clock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from core.state import HotState
from offers.domain import TooManyAttempts, lockout_bucket


class GuessLockout:
    def __init__(self, state: HotState, failures: int, window_s: int) -> None:
        self.state = state
        self.failures = failures
        self.window_s = window_s

    def _key(self, identity: str, bucket: int) -> str:
        return f"pos-fail:{{{identity}}}:{bucket}"

    def check(self, identities: Sequence[str], now: datetime) -> None:
        """Raise ``TooManyAttempts`` (with the seconds left in the window) when any identity
        has used up its failures in the current window."""
        bucket, retry_after = lockout_bucket(now, self.window_s)
        for identity in identities:
            if self.state.counter(self._key(identity, bucket)) >= self.failures:
                raise TooManyAttempts(
                    f"too many failed coupon lookups ({self.failures} in "
                    f"{self.window_s} s); try again in {retry_after} s",
                    retry_after,
                )

    def record_failure(self, identities: Sequence[str], now: datetime) -> None:
        bucket, _ = lockout_bucket(now, self.window_s)
        for identity in identities:
            self.state.incr(self._key(identity, bucket), 2 * self.window_s)
