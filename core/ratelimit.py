"""Fixed-window rate limits per API key, device and client address, counted in the hot state.

Each (subject, route class, window) is one counter: one atomic increment with an expiry, on one
key whose ``{...}`` hash tag is the subject, so Redis Cluster keeps it in one slot. All the
subjects of a request are counted in one round trip. Counters of refused requests still count:
a client hammering past its limit stays refused until the window ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from core.clock import Clock
from core.errors import RateLimited
from core.state import HotState


class RouteLimits(BaseModel):
    """Requests allowed per window for one route class; 0 = no limit on that subject."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_key: int = Field(default=0, ge=0)
    per_device: int = Field(default=0, ge=0)
    per_ip: int = Field(default=0, ge=0)


class RateLimits(BaseModel):
    """Limits by route class. Pings count per device token; the SDK's publishable key is shared
    by every install, so the defaults count SDK routes per device and address, not per key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pings: RouteLimits = RouteLimits(per_device=240, per_ip=2400)
    redemptions: RouteLimits = RouteLimits(per_key=300, per_ip=600)
    manager: RouteLimits = RouteLimits(per_key=600, per_ip=1200)
    default: RouteLimits = RouteLimits(per_device=120, per_ip=1200)

    def for_class(self, route_class: str) -> RouteLimits:
        limits: RouteLimits = getattr(self, route_class, self.default)
        return limits


@dataclass(frozen=True, slots=True)
class Subjects:
    """Who a request counts against; None where the request does not name one."""

    key_id: str | None = None
    device_id: str | None = None
    ip: str | None = None


class RateLimiter:
    def __init__(self, state: HotState, clock: Clock, limits: RateLimits, window_s: int) -> None:
        self.state = state
        self.clock = clock
        self.limits = limits
        self.window_s = window_s

    def hit(self, route_class: str, subjects: Subjects) -> None:
        """Count this request; raise ``RateLimited`` when any subject is over its limit."""
        (refused,) = self.hit_many(route_class, [subjects])
        if refused is not None:
            raise refused

    def hit_many(self, route_class: str, requests: Sequence[Subjects]) -> list[RateLimited | None]:
        """Count several requests of one route class in one round trip, in order (a request
        over a limit still counts, so a later one sees it); for each, its refusal or None."""
        counts = [self.counts(route_class, subjects) for subjects in requests]
        keys = [key for count in counts for key in count.keys]
        ttl_s = max((count.ttl_s for count in counts), default=0)
        values = iter(self.state.incr_many(keys, ttl_s) if keys else [])
        return [count.verdict([next(values) for _ in count.keys]) for count in counts]

    def counts(self, route_class: str, subjects: Subjects) -> Count:
        """One request's counters, to be counted by the caller (``HotState.incr_many``, or with
        other work in one round trip) and judged by ``Count.verdict``."""
        limits = self.limits.for_class(route_class)
        now = self.clock.now().timestamp()
        window = math.floor(now / self.window_s)
        checked = [
            (kind, name, limit)
            for kind, name, limit in (
                ("key", subjects.key_id, limits.per_key),
                ("device", subjects.device_id, limits.per_device),
                ("ip", subjects.ip, limits.per_ip),
            )
            if name and limit > 0
        ]
        return Count(
            route_class,
            tuple(f"rl:{{{kind}:{name}}}:{route_class}:{window}" for kind, name, _ in checked),
            tuple((kind, limit) for kind, _, limit in checked),
            max(1, math.ceil((window + 1) * self.window_s - now)),
            self.window_s,
        )


@dataclass(frozen=True, slots=True)
class Count:
    """A request's rate-limit counters: their keys in the hot state (one per limited subject;
    a new counter expires ``ttl_s`` after it is made, a little over one window) and the limit
    of each."""

    route_class: str
    keys: tuple[str, ...]
    limits: tuple[tuple[str, int], ...]  # (subject kind, limit), one per key
    retry_after_s: int
    window_s: int

    @property
    def ttl_s(self) -> int:
        return self.window_s + 1

    def verdict(self, values: Sequence[int]) -> RateLimited | None:
        """The refusal for these counter values (after this request's increment), or None."""
        for (kind, limit), value in zip(self.limits, values, strict=True):
            if value > limit:
                return RateLimited(
                    f"too many {self.route_class} requests for this {kind}: {limit} per "
                    f"{self.window_s} s; retry in {self.retry_after_s} s",
                    retry_after_s=self.retry_after_s,
                )
        return None
