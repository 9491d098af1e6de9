"""The console's session: a cookie for the manager key, fenced against cross-site writes."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from api.app import create_app
from core.apikeys import ApiKeyAdmin
from tests.api.conftest import MANAGER, Engine


def _login(engine: Engine, key: str) -> TestClient:
    client = TestClient(create_app(runtime=engine.runtime), follow_redirects=False)
    response = client.post("/console/login", data={"key": key})
    assert response.status_code == 303
    return client


def test_login_sets_a_strict_http_only_cookie_and_pages_need_it(engine_api: Engine) -> None:
    anonymous = TestClient(create_app(runtime=engine_api.runtime), follow_redirects=False)
    first = anonymous.get("/console")
    assert first.status_code == 303 and first.headers["location"] == "/console/login"
    assert anonymous.get("/console/config.json").status_code == 401
    assert anonymous.get("/v1/manager/campaigns").status_code == 401

    refused = anonymous.post("/console/login", data={"key": "guess"})
    assert refused.headers["location"] == "/console/login?failed=1"
    assert "set-cookie" not in refused.headers

    client = _login(engine_api, "dev-manager-key")
    cookie = client.cookies.get("oe_console")
    assert cookie and "dev-manager-key" not in cookie
    header = next(
        v
        for k, v in client.post("/console/login", data={"key": "dev-manager-key"}).headers.items()
        if k == "set-cookie"
    )
    assert "HttpOnly" in header and "SameSite=strict" in header.replace("Strict", "strict")
    page = client.get("/console")
    assert page.status_code == 200 and "Offer Engine console" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/console/vendor/leaflet/leaflet.js").status_code == 200
    assert client.get("/v1/manager/campaigns").status_code == 200


def test_cookie_writes_need_the_console_header(engine_api: Engine) -> None:
    store = engine_api.create_store()
    client = _login(engine_api, "dev-manager-key")
    patch = {"tags": ["city"]}
    no_header = client.patch(f"/v1/manager/stores/{store['id']}", json=patch)
    assert no_header.status_code == 401 and "X-Console" in no_header.json()["error"]["message"]
    ok = client.patch(f"/v1/manager/stores/{store['id']}", json=patch, headers={"X-Console": "1"})
    assert ok.status_code == 200 and ok.json()["tags"] == ["city"]


def test_sessions_expire_with_the_engine_clock(engine_api: Engine) -> None:
    client = _login(engine_api, "dev-manager-key")
    engine_api.clock.advance(timedelta(hours=8, seconds=1))
    expired = client.get("/v1/manager/campaigns")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    assert client.get("/console").status_code == 303
    # the API key still works as before
    assert engine_api.client.get("/v1/manager/campaigns", headers=MANAGER).status_code == 200


def test_a_managed_key_signs_its_own_changes_and_its_revocation_ends_the_session(
    engine_api: Engine,
) -> None:
    """Each manager logs in with their own key: the audit log names that key, and revoking it
    ends the session at once in this process (every process within the documented bound)."""
    admin = ApiKeyAdmin(engine_api.runtime.sessions, engine_api.runtime.state, engine_api.clock)
    issued = admin.create("manager", "Alice, campaigns")
    client = _login(engine_api, issued.key)
    assert issued.key not in (client.cookies.get("oe_console") or "")
    store = engine_api.create_store()
    changed = client.patch(
        f"/v1/manager/stores/{store['id']}", json={"tags": ["city"]}, headers={"X-Console": "1"}
    )
    assert changed.status_code == 200, changed.text
    audit = engine_api.client.get(
        "/v1/manager/audit", params={"target": store["id"]}, headers=MANAGER
    ).json()["items"]
    actors = {a["action"]: a["actor"] for a in audit}
    assert actors["store.update"] == f"manager:{issued.record.id}"
    assert actors["store.create"] != actors["store.update"]  # the bootstrap key made the store
    admin.revoke(issued.record.id)
    engine_api.clock.advance(timedelta(seconds=3))  # past the verifier's recheck of revocations
    refused = client.get("/v1/manager/campaigns")
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    assert client.get("/console", follow_redirects=False).status_code == 303
