"""Guessing lockout at the till: failed code lookups counted per terminal and per IP address in
the hot state (shared by every API process), in fixed windows of the engine's clock.

A lookup reserves its place in each window before it runs (an atomic add below the limit), so
lookups running at the same time cannot get past the limit together; a lookup that finds the
code gives its place back, one that fails keeps it as a failure."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from core.state import HotState
from offers.domain import TooManyAttempts, lockout_bucket


class Attempt:
    """One lookup's reservation; ``failed()`` keeps it as a failure."""

    def __init__(self) -> None:
        self.kept = False

    def failed(self) -> None:
        self.kept = True


class GuessLockout:
    def __init__(self, state: HotState, failures: int, window_s: int) -> None:
        self.state = state
        self.failures = failures
        self.window_s = window_s

    def _key(self, identity: str, bucket: int) -> str:
        return f"pos-fail:{{{identity}}}:{bucket}"

    @contextmanager
    def attempt(self, identities: Sequence[str], now: datetime) -> Iterator[Attempt]:
        """Reserve one lookup for every identity in the current window, or raise
        ``TooManyAttempts`` (with the seconds left in the window) when any has its failures and
        running lookups at the limit. The reservation is given back on leaving unless the
        lookup ``failed()``."""
        bucket, retry_after = lockout_bucket(now, self.window_s)
        ttl_s = 2 * self.window_s
        taken: list[str] = []
        try:
            for identity in identities:
                key = self._key(identity, bucket)
                if not self.state.incr_within(key, self.failures, ttl_s):
                    raise TooManyAttempts(
                        f"too many failed coupon lookups ({self.failures} in "
                        f"{self.window_s} s); try again in {retry_after} s",
                        retry_after,
                    )
                taken.append(key)
            attempt = Attempt()
            yield attempt
        except BaseException:
            self._release(taken)
            raise
        if not attempt.kept:
            self._release(taken)

    def _release(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.state.incr(key, 2 * self.window_s, amount=-1)
