"""A subject's full export for compliance: the consent record (``consent.records``) plus what
the other domains hold about them (pings still stored, fence events, coupons, deliveries).

It lives in ``api/`` because it reads every domain, and imports flow ``api -> offers -> consent |
geo``; each domain's part is plain reads of its own tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.crypto import EvidenceSealer
from consent.models import Subject
from consent.records import SubjectConsentRecord, plain
from geo.models import FenceEvent, Ping
from offers.models import Coupon, Delivery, Offer

FORMAT = "offer-engine.subject-export"
FORMAT_VERSION = 1


def subject_export(
    session: Session, sealer: EvidenceSealer, subject: Subject, now: datetime
) -> dict[str, Any]:
    record = SubjectConsentRecord(session, sealer).build(subject)
    coupons = list(
        session.scalars(
            select(Coupon).where(Coupon.subject_id == subject.id).order_by(Coupon.issued_at)
        )
    )
    offers = {
        o.id: o
        for o in session.scalars(select(Offer).where(Offer.id.in_({c.offer_id for c in coupons})))
    }
    deliveries = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.coupon_id.in_([c.id for c in coupons]))
            .order_by(Delivery.due_at, Delivery.id)
        )
    )
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "exported_at": now.isoformat(),
        **record,
        "pings": [
            plain(p, without=("subject_id",))
            for p in session.scalars(
                select(Ping).where(Ping.subject_id == subject.id).order_by(Ping.id)
            )
        ],
        "fence_events": [
            plain(e, without=("subject_id",))
            for e in session.scalars(
                select(FenceEvent)
                .where(FenceEvent.subject_id == subject.id)
                .order_by(FenceEvent.occurred_at, FenceEvent.id)
            )
        ],
        "coupons": [
            {
                **plain(c, without=("subject_id",)),
                "offer": {
                    "title": offers[c.offer_id].title,
                    "discount_text": offers[c.offer_id].discount_text,
                }
                if c.offer_id in offers
                else None,
            }
            for c in coupons
        ],
        "deliveries": [plain(d) for d in deliveries],
    }
