"""The counted part of an offer decision: caps, cooldown and budget, each taken atomically and
given back when a later check refuses, so that concurrent issuers never overshoot.

Caps and the cooldown live in the hot state (Redis Lua or the in-process lock); the budget lives
in SQL (a conditional UPDATE on the campaign row) and is the durable truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.state import HotState
from offers.decisions import Outcome
from offers.domain import (
    MAX_VALID_MINUTES,
    CampaignRules,
    Refusal,
    cap_key,
    cooldown_key,
)
from offers.models import OfferDecision
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


def campaign_count(
    session: Session, subject_id: str, campaign_id: str, day: tuple[datetime, datetime]
) -> int:
    """What a campaign's daily cap counted for a shopper on a day, from SQL: its coupons and its
    held-out decisions (the held-out are capped like the treated)."""
    coupons = CouponRepository(session).issued_between(subject_id, *day, campaign_id)
    held_out = session.scalar(
        select(func.count()).where(
            OfferDecision.subject_id == subject_id,
            OfferDecision.campaign_id == campaign_id,
            OfferDecision.outcome == Outcome.HELD_OUT.value,
            OfferDecision.decided_at >= day[0],
            OfferDecision.decided_at < day[1],
        )
    )
    return coupons + int(held_out or 0)


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
        day: tuple[datetime, datetime],
        now: datetime,
    ) -> Refusal | None:
        """Take every count for one coupon, or none of them (the refusal says which stopped).
        ``day``: when ``local_day`` starts and ends, for counting it again from SQL where the
        hot state lost it."""
        taken = Allowance()
        key = cap_key(subject_id, campaign_id, local_day)
        seed = partial(campaign_count, self.session, subject_id, campaign_id, day)
        if not self.state.incr_within(key, campaign_cap, CAP_TTL_S, seed):
            return Refusal.CAMPAIGN_DAILY_CAP
        taken.counters.append(key)
        # Counted even without a limit, so a limit set during the day counts what came before.
        issued = partial(self.coupons.issued_between, subject_id, *day)
        if not self.state.incr_within(shopper_key, shopper_cap, CAP_TTL_S, issued):
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
