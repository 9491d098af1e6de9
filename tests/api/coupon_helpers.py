"""Helpers for the eligibility, budget and till tests: quick shoppers, re-entry, till calls."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from consent.models import Device
from core.db import transaction
from core.ids import new_id
from geo.models import Fence, FenceEvent
from offers.models import Campaign
from offers.service import IssuedCoupon, OfferIssuer
from tests.api.conftest import INSIDE, MANAGER, OUTSIDE, POS, SDK_KEY, Engine


def quick_shopper(engine: Engine, customer: str) -> dict[str, Any]:
    """A device whose owner allows location and offers by push (no email round trip)."""
    response = engine.client.post(
        "/v1/sdk/devices",
        headers=SDK_KEY,
        json={"customer_ref": customer, "platform": "android", "push_token": f"tok-{customer}"},
    )
    assert response.status_code == 201, response.text
    device = dict(response.json())
    device["auth"] = {"Authorization": f"Bearer {device['token']}"}
    engine.consent(device, "location_tracking")
    engine.consent(device, "marketing_offers", channel="push")
    return device


def reenter(engine: Engine, shopper: dict[str, Any], after: timedelta) -> dict[str, Any]:
    """Leave the store (an exit is confirmed), wait ``after``, and enter again."""
    engine.clock.advance(timedelta(seconds=30))  # 550 m: slower than the jump filter's limit
    engine.ping(shopper, OUTSIDE)
    engine.clock.advance(timedelta(seconds=61))
    engine.ping(shopper, OUTSIDE)
    engine.clock.advance(after)
    return dict(engine.ping(shopper, INSIDE).json())


def campaign(
    engine: Engine, store_ids: list[str], offer: dict[str, Any] | None = None, **rules: Any
) -> dict[str, Any]:
    body = {
        "name": "Lunch deal",
        "store_ids": store_ids,
        # the eligibility tests decide pass-bys too (``decide`` with an approaching event)
        "triggers": ["enter", "approaching"],
        "offer": {
            "title": "Lunch",
            "body": "A warm lunch.",
            "discount_text": "3 EUR off",
            "valid_minutes": 15,
            **(offer or {}),
        },
        **rules,
    }
    response = engine.client.post("/v1/manager/campaigns", headers=MANAGER, json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def budget_row(engine: Engine, campaign_id: str) -> tuple[int, int]:
    with engine.runtime.sessions() as session:
        row = session.get(Campaign, campaign_id)
        assert row is not None
        return row.issued_count, row.reserved_liability


def till(
    engine: Engine,
    path: str,
    code: str,
    store_id: str,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    sent = {**POS, **(headers or {})}
    if key is not None:
        sent["Idempotency-Key"] = key
    return engine.client.post(
        f"/v1/pos/{path}", headers=sent, json={"code": code, "store_id": store_id}
    )


def refusals_of(engine: Engine, event_id: str) -> list[dict[str, str]]:
    """The per-campaign refusals recorded in the offer receipt of one fence event."""
    from sqlalchemy import select

    from consent.models import ConsentReceipt

    with engine.runtime.sessions() as session:
        receipts = session.scalars(
            select(ConsentReceipt).where(
                ConsentReceipt.subject_ref == event_id, ConsentReceipt.action == "offer"
            )
        ).all()
    return [r for receipt in receipts for r in receipt.details.get("refusals", [])]


def decide(
    engine: Engine,
    shopper: dict[str, Any],
    store: dict[str, Any],
    eta_s: float = 0.0,
    kind: str = "approaching",
) -> tuple[list[IssuedCoupon], FenceEvent]:
    """Run the offer decision for one fence event (a pass-by predicted ``eta_s`` away by
    default), in its own transaction, the way the ping path does."""
    now = engine.clock.now()
    with transaction(engine.runtime.sessions) as session:
        device = session.get(Device, shopper["device_id"])
        fence = session.query(Fence).filter(Fence.store_id == store["id"]).one()
        assert device is not None
        event = FenceEvent(
            id=new_id("evt"),
            device_id=device.id,
            subject_id=device.subject_id,
            fence_id=fence.id,
            store_id=store["id"],
            kind=kind,
            occurred_at=now,
            details={"eta_s": eta_s, "distance_m": eta_s * 1.4} if kind == "approaching" else {},
            eligible=True,
            reason=None,
            created_at=now,
        )
        session.add(event)
        session.flush()
        limits = engine.runtime.ingestor.issue_limits
        issuer = OfferIssuer(
            session,
            engine.runtime.state,
            set(),
            lambda _: None,
            limits,
            campaigns=engine.runtime.ingestor.campaigns,
            stores=engine.runtime.fences.current().stores,
        )
        issued = issuer.on_enter(event, device, now)
    return issued, event
