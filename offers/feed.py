"""The live feed: decisions (triggers and what became of them) and redemptions, in order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from offers.models import Campaign, Coupon, OfferDecision

BATCH = 200


@dataclass(slots=True)
class FeedCursor:
    decision_id: int
    redeemed_after: datetime


class LiveFeed:
    def __init__(self, session: Session) -> None:
        self.session = session

    def latest_decision_id(self) -> int:
        last = self.session.scalar(
            select(OfferDecision.id).order_by(OfferDecision.id.desc()).limit(1)
        )
        return int(last or 0)

    def since(self, cursor: FeedCursor) -> list[tuple[str, str, dict[str, Any]]]:
        """(event type, id, data) after the cursor, which moves forward."""
        names = {r[0]: r[1] for r in self.session.execute(select(Campaign.id, Campaign.name))}
        out: list[tuple[str, str, dict[str, Any]]] = []
        for d in self.session.scalars(
            select(OfferDecision)
            .where(OfferDecision.id > cursor.decision_id)
            .order_by(OfferDecision.id)
            .limit(BATCH)
        ):
            cursor.decision_id = d.id
            out.append(
                (
                    "decision",
                    str(d.id),
                    {
                        "campaign_id": d.campaign_id,
                        "campaign": names.get(d.campaign_id, ""),
                        "store_id": d.store_id,
                        "trigger": d.trigger_kind,
                        "outcome": d.outcome,
                        "reason": d.reason,
                        "variant": d.offer_id,
                        "at": d.decided_at.isoformat(),
                    },
                )
            )
        for c in self.session.scalars(
            select(Coupon)
            .where(Coupon.redeemed_at.is_not(None), Coupon.redeemed_at > cursor.redeemed_after)
            .order_by(Coupon.redeemed_at)
            .limit(BATCH)
        ):
            assert c.redeemed_at is not None
            cursor.redeemed_after = c.redeemed_at
            out.append(
                (
                    "redemption",
                    c.id,
                    {
                        "campaign_id": c.campaign_id,
                        "campaign": names.get(c.campaign_id, ""),
                        "store_id": c.store_id,
                        "variant": c.offer_id,
                        "at": c.redeemed_at.isoformat(),
                    },
                )
            )
        return out
