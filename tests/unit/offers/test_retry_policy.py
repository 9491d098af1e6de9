"""Retry backoff of the delivery worker: exponential, capped, jittered."""

from __future__ import annotations

import random
import statistics

from offers.delivery import RetryPolicy


def test_backoff_doubles_per_attempt_up_to_the_cap_within_its_jitter_band() -> None:
    random.seed(5)
    policy = RetryPolicy(base_s=2.0, cap_s=60.0)
    for attempt, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (12, 60.0)):
        draws = [policy.backoff_s(attempt) for _ in range(2_000)]
        assert ceiling / 2 <= min(draws) and max(draws) <= ceiling, attempt
        # spread over the whole band, not a fixed delay: many retries do not line up
        assert max(draws) - min(draws) > 0.45 * ceiling, attempt
        assert abs(statistics.mean(draws) - 0.75 * ceiling) < 0.02 * ceiling, attempt
