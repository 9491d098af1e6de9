"""The compliance API: only the compliance key opens it; a subject's full export; the ledger
streamed as NDJSON and CSV that verify offline; verification of the database; "was this push
lawful at time t?"; and every one of those reads is itself in the audit log."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from consent.export import CSV_COLUMNS
from consent.models import ConsentEvent
from consent.verify import verify_ndjson, verify_stream
from core.audit import AuditEntry
from core.settings import INSECURE_KEYS
from tests.api.conftest import INSIDE, MANAGER, OUTSIDE, Engine

COMPLIANCE = {"X-API-Key": INSECURE_KEYS["compliance"]}


def _audits(engine: Engine, action: str) -> list[AuditEntry]:
    with engine.runtime.sessions() as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            )
        )


def _walk_in(engine: Engine, customer: str, email: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A shopper who walks into the store, gets a coupon and receives it by email."""
    shopper = engine.shopper(customer=customer, email=email)
    assert engine.ping(shopper, OUTSIDE).status_code == 200
    engine.clock.advance(timedelta(seconds=30))
    inside = engine.ping(shopper, INSIDE)
    assert inside.status_code == 200, inside.text
    [coupon] = inside.json()["coupons"]
    assert engine.next_report().status == "sent"
    return shopper, coupon


def test_only_the_compliance_key_opens_the_compliance_api(engine_api: Engine) -> None:
    paths = [
        "/v1/compliance/verify",
        "/v1/compliance/ledger.ndjson",
        "/v1/compliance/ledger.csv",
        "/v1/compliance/subjects/cust-1/export",
        "/v1/compliance/receipts?subject_id=cust-1&at=2026-11-23T09:00:00Z",
    ]
    for path in paths:
        for headers in ({}, MANAGER, {"X-API-Key": "not-a-key"}):
            response = engine_api.client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
    assert engine_api.count(AuditEntry, AuditEntry.actor == "compliance") == 0


def test_subject_export_holds_everything_about_one_shopper(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    shopper, coupon = _walk_in(engine_api, "cust-77", "walker@example.com")
    engine_api.shopper(customer="cust-other", email="other@example.com")

    response = engine_api.client.get("/v1/compliance/subjects/cust-77/export", headers=COMPLIANCE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "offer-engine.subject-export"
    assert body["subject"]["external_ref"] == "cust-77"
    subject_id = body["subject"]["id"]
    assert [d["email"] for d in body["devices"]] == ["walker@example.com"]
    history = body["consents"]["history"]
    assert {e["state"] for e in history} >= {"given", "pending_confirmation", "confirmed"}
    notices = {n["id"]: n for n in body["notices_shown"]}
    for event in history:
        notice = notices[event["notice_id"]]
        assert notice["content_hash"] == hashlib.sha256(notice["text"].encode()).hexdigest()
        assert event["entry_hash"] and event["evidence_sealed"]
    assert history[0]["evidence_status"] == "opened"
    assert history[0]["evidence"]["device_id"] == shopper["device_id"]
    current = {(c["purpose"], c["channel"]): c["state"] for c in body["consents"]["current"]}
    assert current[("marketing_offers", "email")] == "confirmed"
    assert {r["action"] for r in body["receipts"]} >= {"ping", "offer", "delivery"}
    assert len(body["pings"]) == 2
    assert [e["kind"] for e in body["fence_events"]] == ["enter"]
    [held] = body["coupons"]
    assert held["id"] == coupon["coupon_id"] and held["offer"]["discount_text"] == "30% off"
    [delivery] = body["deliveries"]
    assert (delivery["channel"], delivery["status"]) == ("email", "sent")
    assert "other@example.com" not in response.text  # nobody else's data

    by_id = engine_api.client.get(
        f"/v1/compliance/subjects/{subject_id}/export", headers=COMPLIANCE
    )
    assert by_id.json()["subject"]["id"] == subject_id
    missing = engine_api.client.get("/v1/compliance/subjects/nobody/export", headers=COMPLIANCE)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    audits = _audits(engine_api, "consent.subject_export")
    assert [(a.actor, a.target) for a in audits] == [("compliance", subject_id)] * 2
    assert audits[0].details["requested"] == "cust-77"


def test_the_ledger_streams_as_ndjson_and_csv_that_verify(engine_api: Engine) -> None:
    engine_api.shopper(customer="cust-1", email="one@example.com")
    engine_api.clock.advance(timedelta(minutes=10))
    later = engine_api.clock.now()
    engine_api.shopper(customer="cust-2", email="two@example.com")
    total = engine_api.count(ConsentEvent)

    with engine_api.client.stream(
        "GET", "/v1/compliance/ledger.ndjson", headers=COMPLIANCE
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = list(response.iter_lines())
    header, trailer = json.loads(lines[0]), json.loads(lines[-1])
    assert (header["type"], trailer["type"]) == ("header", "trailer")
    assert header["anchor"] == {"id": 0, "hash": "0" * 64}
    assert trailer["entries"] == total and trailer["next"] is None
    assert trailer["checkpoint"]["public_key"] == header["public_key"]
    result = verify_ndjson(lines)
    assert result.ok and result.entries == total, result.summary()

    ranged = engine_api.client.get(
        "/v1/compliance/ledger.ndjson",
        params={"from": later.isoformat()},
        headers=COMPLIANCE,
    )
    part = ranged.text.splitlines()
    assert json.loads(part[0])["anchor"]["id"] == json.loads(part[0])["first_id"] - 1 > 0
    partial = verify_ndjson(part)
    assert partial.ok and 0 < partial.entries < total, partial.summary()

    table = engine_api.client.get("/v1/compliance/ledger.csv", headers=COMPLIANCE)
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(line for line in table.text.splitlines() if not line.startswith("#")))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == total + 1
    assert verify_stream(io.StringIO(table.text)).ok

    bad = engine_api.client.get(
        "/v1/compliance/ledger.ndjson",
        params={"from": later.isoformat(), "to": (later - timedelta(hours=1)).isoformat()},
        headers=COMPLIANCE,
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    audits = _audits(engine_api, "consent.ledger_export")
    assert [a.details["format"] for a in audits] == ["ndjson", "ndjson", "csv"]
    assert audits[1].details["from"] == later.isoformat()
    assert all(a.actor == "compliance" for a in audits)

    verified = engine_api.client.get("/v1/compliance/verify", headers=COMPLIANCE).json()
    assert verified["ok"] and verified["entries"] == total, verified
    assert len(_audits(engine_api, "consent.verify")) == 1


def test_receipts_tell_whether_a_push_was_lawful_at_the_time(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    shopper, _ = _walk_in(engine_api, "cust-9", "nine@example.com")
    sent_at = engine_api.clock.now()
    engine_api.clock.advance(timedelta(hours=1))
    engine_api.consent(shopper, "marketing_offers", granted=False, channel="email")

    then = engine_api.client.get(
        "/v1/compliance/receipts",
        params={"subject_id": "cust-9", "at": sent_at.isoformat(), "window_s": 60},
        headers=COMPLIANCE,
    )
    assert then.status_code == 200, then.text
    body = then.json()
    [delivery] = [r for r in body["receipts"] if r["action"] == "delivery"]
    assert delivery["allowed"] is True
    assert delivery["event"]["state"] == "confirmed"
    assert delivery["event"]["hash_matches_receipt"] is True
    email_then = next(c for c in body["consent_at"] if c["channel"] == "email")
    assert (email_then["state"], email_then["allowed"]) == ("confirmed", True)

    now = engine_api.client.get(
        "/v1/compliance/receipts",
        params={"subject_id": "cust-9", "at": engine_api.clock.now().isoformat()},
        headers=COMPLIANCE,
    ).json()
    assert now["receipts"] == []
    email_now = next(c for c in now["consent_at"] if c["channel"] == "email")
    assert (email_now["state"], email_now["allowed"]) == ("withdrawn", False)
    naive = engine_api.client.get(
        "/v1/compliance/receipts",
        params={"subject_id": "cust-9", "at": "2026-11-23T09:00:00"},
        headers=COMPLIANCE,
    )
    assert naive.status_code == 422
    assert len(_audits(engine_api, "consent.receipts_query")) == 2
