"""The counted part of an offer decision: caps, cooldown and budget, each taken atomically and
given back when a later check refuses, so that concurrent issuers never overshoot.

Caps and the cooldown live in the hot state (Redis Lua or the in-process lock); the budget lives
in SQL (a conditional UPDATE on the campaign row) and is the durable truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session

from core.state import HotState
from offers.domain import (
    MAX_VALID_MINUTES,
    CampaignRules,
    Refusal,
    cap_key,
    cooldown_key,
)
from offers.repository import CampaignBudget, CouponRepository

CAP_TTL_S = 2 * 86400
COOLDOWN_TTL_S = MAX_VALID_MINUTES * 60 + 60  # longer than any campaign's cooldown


@dataclass(frozen=True, slots=True)
class IssueLimits:
    """Engine-wide limits (settings); a shopper's own daily maximum may be lower."""

    shopper_daily_cap: int = 10


@dataclass(slots=True)
class Allowance:
    """What one issue has taken so far, to give back if a later step refuses."""

    counters: list[str] = field(default_factory=list)
    spacing: tuple[str, float] | None = None


class IssueCounter:
    def __init__(self, session: Session, state: HotState) -> None:
        self.session = session
        self.state = state
        self.budget = CampaignBudget(session)
        self.coupons = CouponRepository(session)

    def take(
        self,
        *,
        subject_id: str,
        store_id: str,
        campaign_id: str,
        campaign_cap: int,
        shopper_key: str,
        shopper_cap: int,
        rules: CampaignRules,
        liability: int,
        local_day: date,
        now: datetime,
    ) -> Refusal | None:
        """Take every count for one coupon, or none of them (the refusal says which stopped)."""
        taken = Allowance()
        key = cap_key(subject_id, campaign_id, local_day)
        if not self.state.incr_within(key, campaign_cap, CAP_TTL_S):
            return Refusal.CAMPAIGN_DAILY_CAP
        taken.counters.append(key)
        # Counted even without a limit, so a limit set during the day counts what came before.
        if not self.state.incr_within(shopper_key, shopper_cap, CAP_TTL_S):
            return self._give_back(taken, Refusal.SHOPPER_DAILY_LIMIT)
        taken.counters.append(shopper_key)
        gap = timedelta(minutes=rules.store_cooldown_minutes)
        if gap:
            last = self.coupons.last_at_store(subject_id, store_id)  # survives a lost hot state
            if last is not None and now - last < gap:
                return self._give_back(taken, Refusal.STORE_COOLDOWN)
        # Every issue stamps the store, so any campaign's cooldown counts from the last coupon.
        spacing = cooldown_key(subject_id, store_id)
        stamp = now.timestamp()
        if not self.state.claim_spacing(spacing, stamp, gap.total_seconds(), COOLDOWN_TTL_S):
            return self._give_back(taken, Refusal.STORE_COOLDOWN)
        taken.spacing = (spacing, stamp)
        if rules.has_budget:
            refused = self.budget.reserve(campaign_id, liability)
            if refused is not None:
                return self._give_back(taken, refused)
        return None

    def _give_back(self, taken: Allowance, refusal: Refusal) -> Refusal:
        for key in taken.counters:
            self.state.incr(key, CAP_TTL_S, amount=-1)
        if taken.spacing is not None:
            self.state.release_spacing(*taken.spacing)
        return refusal
