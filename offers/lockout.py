"""Guessing lockout at the till: failed code lookups counted per terminal and per IP address in
the hot state (shared by every API process), in fixed windows of the engine's clock.

A lookup takes a place in each window before it runs (an atomic add below the limit), so
lookups running at the same time cannot get past the limit together. A lookup that finds its
code gives its place back; one that fails keeps it and is counted as a failure. When every
place is taken by lookups still running (not by failures) a new one waits for a place, up to
``wait_s``; when failures fill them, it is refused until the window ends."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from core.state import HotState
from offers.domain import TooManyAttempts, lockout_bucket

WAIT_S = 10.0  # how long a lookup waits while running lookups hold every place
PAUSE_S = 0.005


class Attempt:
    """One lookup's place; ``failed()`` keeps it as a failure."""

    def __init__(self) -> None:
        self.kept = False

    def failed(self) -> None:
        self.kept = True


class GuessLockout:
    def __init__(self, state: HotState, failures: int, window_s: int, wait_s: float = WAIT_S):
        self.state = state
        self.failures = failures
        self.window_s = window_s
        self.wait_s = wait_s

    def _places(self, identity: str, bucket: int) -> str:
        return f"pos-places:{{{identity}}}:{bucket}"  # failures and lookups running

    def _failed(self, identity: str, bucket: int) -> str:
        return f"pos-fail:{{{identity}}}:{bucket}"

    @contextmanager
    def attempt(self, identities: Sequence[str], now: datetime) -> Iterator[Attempt]:
        """Take a place for one lookup in every identity's current window, or raise
        ``TooManyAttempts`` (with the seconds left in the window) once any identity's failures
        fill its places. The place is given back on leaving unless the lookup ``failed()``."""
        bucket, retry_after = lockout_bucket(now, self.window_s)
        keys = [(self._places(i, bucket), self._failed(i, bucket)) for i in identities]
        taken = self._take(keys, retry_after)
        try:
            attempt = Attempt()
            yield attempt
        except BaseException:
            self._give_back(taken)
            raise
        if attempt.kept:
            for _, failed in taken:
                self.state.incr(failed, 2 * self.window_s)  # the place stays, as a failure
        else:
            self._give_back(taken)

    def _take(self, keys: Sequence[tuple[str, str]], retry_after: int) -> list[tuple[str, str]]:
        ttl_s = 2 * self.window_s
        deadline = time.monotonic() + self.wait_s
        while True:
            taken: list[tuple[str, str]] = []
            for places, failed in keys:
                if not self.state.incr_within(places, self.failures, ttl_s):
                    break
                taken.append((places, failed))
            else:
                return taken
            self._give_back(taken)
            if self.state.counter(failed) >= self.failures:
                raise TooManyAttempts(
                    f"too many failed coupon lookups ({self.failures} in "
                    f"{self.window_s} s); try again in {retry_after} s",
                    retry_after,
                )
            if time.monotonic() >= deadline:
                raise TooManyAttempts(
                    f"{self.failures} coupon lookups of this terminal or address are already "
                    "running; try again in a moment",
                    1,
                )
            time.sleep(PAUSE_S)

    def _give_back(self, taken: Sequence[tuple[str, str]]) -> None:
        for places, _ in taken:
            self.state.incr(places, 2 * self.window_s, amount=-1)
