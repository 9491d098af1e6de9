"""Managed API keys over HTTP: hashed, scoped to stores, rotatable, revocable, never logged."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from api.logfilter import RedactSecrets, uvicorn_log_config
from core.apikeys import ApiKey, ApiKeyAdmin, split_key
from tests.api.conftest import INSIDE, MANAGER, Engine, EngineFactory


def _admin(engine: Engine) -> ApiKeyAdmin:
    runtime = engine.runtime
    return ApiKeyAdmin(runtime.sessions, runtime.state, engine.clock)


def _secret(key: str) -> str:
    """The secret part of a managed key (it may itself contain ``_``)."""
    parts = split_key(key)
    assert parts is not None, key
    return parts[1]


def _stores(engine: Engine, key: str) -> int:
    response = engine.client.get("/v1/manager/stores", headers={"X-API-Key": key})
    return int(response.status_code)


def test_a_managed_key_opens_its_role_only_and_is_stored_as_a_digest(engine_api: Engine) -> None:
    issued = _admin(engine_api).create("manager", "console")
    assert issued.key.startswith(f"oek_{issued.record.id}_")
    assert _stores(engine_api, issued.key) == 200
    pos = engine_api.client.post(
        "/v1/pos/redemptions",
        headers={"X-API-Key": issued.key},
        json={"code": "ABCDE-12345", "store_id": "s"},
    )
    assert pos.status_code == 401, pos.text
    secret = _secret(issued.key)
    assert _stores(engine_api, issued.key[:-1] + ("A" if secret[-1] != "A" else "B")) == 401
    assert _stores(engine_api, f"oek_nosuchkey_{secret}") == 401
    with engine_api.runtime.sessions() as session:
        row = session.scalars(select(ApiKey)).one()
        stored = " ".join(str(getattr(row, c.key)) for c in ApiKey.__table__.columns)
    assert secret not in stored
    # The bootstrap key from the settings keeps working next to managed keys.
    assert _stores(engine_api, MANAGER["X-API-Key"]) == 200


def test_a_pos_key_redeems_only_for_its_stores(engine_api: Engine) -> None:
    store = engine_api.create_store()
    other = engine_api.create_store(name="Other", lon=24.0, lat=60.0)
    engine_api.create_campaign([store["id"], other["id"]])
    shopper = engine_api.shopper()
    [coupon] = engine_api.ping(shopper, INSIDE).json()["coupons"]
    till = _admin(engine_api).create("pos", "till 3", stores=[store["id"]])
    headers = {"X-API-Key": till.key}

    refused = engine_api.client.post(
        "/v1/pos/redemptions",
        headers=headers,
        json={"code": coupon["code"], "store_id": other["id"]},
    )
    assert refused.status_code == 403, refused.text
    assert "till 3" in refused.json()["error"]["message"]
    done = engine_api.client.post(
        "/v1/pos/redemptions",
        headers=headers,
        json={"code": coupon["code"], "store_id": store["id"]},
    )
    assert done.status_code == 200, done.text


def test_rotation_keeps_the_old_key_for_the_overlap_then_refuses_it(engine_api: Engine) -> None:
    admin = _admin(engine_api)
    old = admin.create("manager", "console")
    assert _stores(engine_api, old.key) == 200
    new = admin.rotate(old.record.id, overlap=timedelta(minutes=10))
    assert new.record.role == "manager" and new.key != old.key
    assert _stores(engine_api, old.key) == 200
    assert _stores(engine_api, new.key) == 200
    engine_api.clock.advance(timedelta(minutes=10))
    assert _stores(engine_api, old.key) == 401
    assert _stores(engine_api, new.key) == 200
    states = {r.id: r.state_at(engine_api.clock.now()) for r in admin.list()}
    assert states == {old.record.id: "expired", new.record.id: "active"}


def test_rotation_without_overlap_retires_the_old_key(engine_api: Engine) -> None:
    admin = _admin(engine_api)
    old = admin.create("compliance", "dpo")
    new = admin.rotate(old.record.id)
    engine_api.clock.advance(timedelta(seconds=engine_api.runtime.settings.api_key_recheck_s))
    response = engine_api.client.get("/v1/compliance/verify", headers={"X-API-Key": old.key})
    assert response.status_code == 401
    response = engine_api.client.get("/v1/compliance/verify", headers={"X-API-Key": new.key})
    assert response.status_code == 200, response.text


def test_a_revocation_reaches_every_process_within_the_documented_bound(
    make_engine_api: EngineFactory,
) -> None:
    first = make_engine_api()
    second = make_engine_api()  # another API process on the same database (and Redis)
    issued = _admin(first).create("manager", "console")
    assert _stores(first, issued.key) == 200 and _stores(second, issued.key) == 200

    _admin(first).revoke(issued.record.id)
    settings = second.runtime.settings
    # Processes sharing Redis see the generation change at their next recheck; without a shared
    # store a process notices when its cached row ages out.
    bound = settings.api_key_recheck_s if second.runtime.state.shared else settings.api_key_cache_s
    first.clock.advance(timedelta(seconds=bound))
    assert _stores(first, issued.key) == 401
    assert _stores(second, issued.key) == 401


def test_unknown_roles_and_store_scopes_on_other_roles_are_refused(engine_api: Engine) -> None:
    admin = _admin(engine_api)
    with pytest.raises(Exception, match="unknown role"):
        admin.create("root", "x")
    with pytest.raises(Exception, match="only POS keys"):
        admin.create("manager", "x", stores=["s1"])


def test_no_key_or_token_reaches_the_logs(
    engine_api: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issued = _admin(engine_api).create("manager", "console")
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]])
    shopper = engine_api.shopper()
    token = shopper["token"]
    engine_api.ping(shopper, INSIDE)
    _stores(engine_api, issued.key)
    _stores(engine_api, issued.key + "x")  # refused: logged by id only
    _stores(engine_api, "a-wrong-bootstrap-key-value")
    engine_api.client.get("/v1/sdk/offers", headers={"Authorization": f"Bearer {token}x"})
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(r.getMessage() for r in server_side)
    assert "refused manager API key" in text, "the refusals were logged (by id)"
    for secret in (issued.key, _secret(issued.key), token, "a-wrong-bootstrap-key-value"):
        assert secret not in text
    for secret in (MANAGER["X-API-Key"],):
        assert secret not in text


def test_the_log_filter_redacts_tokens_keys_and_bearer_credentials() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        (
            "127.0.0.1:5000",
            "GET",
            "/v1/consent/confirm?token=eyJhbGciOi.abc.def&x=1",
            "1.1",
            200,
        ),
        None,
    )
    other = logging.LogRecord(
        "app",
        logging.INFO,
        __file__,
        1,
        "key oek_0123abcd4567_s3cr3tS3cr3t and Authorization: Bearer eyJzdWIi.x.y",
        None,
        None,
    )
    for item in (record, other):
        assert RedactSecrets().filter(item)
    assert "eyJhbGciOi" not in record.getMessage() and "token=***" in record.getMessage()
    assert isinstance(record.args, tuple), "uvicorn's access formatter unpacks the arguments"
    assert record.args[2] == "/v1/consent/confirm?token=***&x=1"
    assert "x=1" in record.getMessage()
    message = other.getMessage()
    assert "s3cr3t" not in message and "oek_0123abcd4567_***" in message
    assert "eyJzdWIi" not in message and "Bearer ***" in message


def test_serve_puts_the_filter_on_every_uvicorn_handler() -> None:
    config = uvicorn_log_config()
    assert config["filters"]["redact_secrets"]["()"] is RedactSecrets
    assert config["handlers"], "uvicorn logs through handlers"
    for handler in config["handlers"].values():
        assert "redact_secrets" in handler["filters"]
