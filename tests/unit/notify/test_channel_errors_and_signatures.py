"""Pure parts of the push channels: Retry-After, per-coupon identifiers, webhook signatures."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from notify.channel import OfferMessage
from notify.coupon_fields import apns_id, collapse_token, coupon_ref, expires_epoch, expires_iso
from notify.errors import parse_retry_after, retry_after_from
from notify.webhook import sign_webhook, verify_webhook_signature

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SECRET = "whsec_unit_test_secret_0123456789"


def message(key: str) -> OfferMessage:
    return OfferMessage(
        idempotency_key=key,
        address="x",
        title="t",
        body="b",
        discount_text="d",
        store_name="s",
        code="C",
        expires_at=NOW + timedelta(minutes=5),
        ttl_s=295,
    )


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 5 ", NOW) == 5.0
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", NOW) == 0.0  # in the past


def test_retry_after_that_cannot_be_read_is_none() -> None:
    for value in (None, "", "soon", "-5", "1.5", "١٢"):
        assert parse_retry_after(value, NOW) is None, value


def test_retry_after_header_name_is_case_insensitive() -> None:
    assert retry_after_from({"retry-after": "3"}, NOW) == 3.0
    assert retry_after_from({"RETRY-AFTER": "4"}, NOW) == 4.0
    assert retry_after_from({"Content-Type": "text/plain"}, NOW) is None


def test_collapse_token_is_one_per_coupon_and_fits_every_provider() -> None:
    push, hook, other = message("cpn_1:push"), message("cpn_1:webhook"), message("cpn_2:push")
    assert collapse_token(push) == collapse_token(hook) != collapse_token(other)
    token = collapse_token(push)
    assert len(token) == 32 and re.fullmatch(r"[A-Za-z0-9_-]{32}", token)
    assert coupon_ref(push) == "cpn_1"
    assert coupon_ref(message("no-channel-suffix")) == "no-channel-suffix"


def test_apns_id_is_a_uuid_fixed_by_coupon_and_channel() -> None:
    first = apns_id(message("cpn_1:push"))
    assert first == apns_id(message("cpn_1:push")) == str(uuid.UUID(first))
    assert first != apns_id(message("cpn_1:webhook"))


def test_expiry_fields_are_utc() -> None:
    local = message("k")
    assert expires_iso(local) == "2026-11-23T09:05:00Z"
    assert expires_epoch(local) == int((NOW + timedelta(minutes=5)).timestamp())


def test_webhook_signature_verifies_only_the_same_body_secret_and_time() -> None:
    body = b'{"code":"K7Q-4MX"}'
    t = int(NOW.timestamp())
    header = sign_webhook(SECRET, t, body)
    assert verify_webhook_signature(SECRET, header, body, NOW)
    assert not verify_webhook_signature(SECRET, header, body + b" ", NOW)
    assert not verify_webhook_signature("another-secret", header, body, NOW)
    assert verify_webhook_signature(SECRET, header, body, NOW + timedelta(seconds=300))
    assert not verify_webhook_signature(SECRET, header, body, NOW + timedelta(seconds=301))
    assert not verify_webhook_signature(SECRET, header, body, NOW - timedelta(seconds=301))
    assert verify_webhook_signature(SECRET, header, body, NOW + timedelta(seconds=500), 600)


def test_webhook_signature_header_forms() -> None:
    body = b"{}"
    t = int(NOW.timestamp())
    good = sign_webhook(SECRET, t, body).partition(",v1=")[2]
    assert verify_webhook_signature(SECRET, f"t={t},v1={'0' * 64},v1={good}", body, NOW)  # rotation
    assert verify_webhook_signature(SECRET, f" v1={good} , t={t} ", body, NOW)
    for header in (None, "", f"v1={good}", f"t={t}", f"t=abc,v1={good}", f"t={t},v0={good}"):
        assert not verify_webhook_signature(SECRET, header, body, NOW), header


@given(body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=64), flip=st.integers())
def test_any_change_to_a_signed_body_is_detected(body: bytes, secret: str, flip: int) -> None:
    t = int(NOW.timestamp())
    header = sign_webhook(secret, t, body)
    assert verify_webhook_signature(secret, header, body, NOW)
    if body:
        i = flip % len(body)
        changed = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        assert not verify_webhook_signature(secret, header, changed, NOW)
    assert not verify_webhook_signature(secret, header, body + b"\n", NOW)
