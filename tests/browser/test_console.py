"""The web console in a real headless Chromium (Debian's ``chromium`` package, driven by
Playwright): log in, see the store's fence on the map with no tile server, create a campaign
through the form, see it listed, replay a short track through the SDK API, see the funnel and
the live feed change. Screenshots go to ``test-artifacts/console/``."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.runtime import Runtime
from core.clock import ManualClock
from core.settings import INSECURE_KEYS, EmailBackend, Environment, Settings
from tests.conftest import IN_CI

CHROMIUM = Path(os.environ.get("OFFER_ENGINE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
MANAGER = {"X-API-Key": INSECURE_KEYS["manager"]}
SDK_KEY = {"X-API-Key": INSECURE_KEYS["sdk"]}
STORE = (-2.9916, 53.4075)  # Liverpool, Williamson Square
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _need_browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - a dev dependency
        pytest.fail(f"playwright is a dev dependency: {exc}")
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (Debian packages chromium, chromium-driver)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, runtime: Runtime, base: str, clock: ManualClock) -> None:
        self.runtime, self.base, self.clock = runtime, base, clock
        self.http = httpx.Client(base_url=base, timeout=10)

    def ping(self, device: dict[str, Any], lon: float, lat: float) -> dict[str, Any]:
        response = self.http.post(
            "/v1/sdk/pings",
            headers={"Authorization": f"Bearer {device['token']}"},
            json={
                "pings": [
                    {
                        "lon": lon,
                        "lat": lat,
                        "accuracy_m": 8,
                        "recorded_at": self.clock.now().isoformat(),
                    }
                ]
            },
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port = _free_port()
    settings = Settings(
        environment=Environment.TEST,
        database_url=f"sqlite:///{tmp_path / 'console.db'}",
        email_backend=EmailBackend.FILE,
        email_file_dir=tmp_path / "outbox",
        public_base_url=f"http://127.0.0.1:{port}",
        default_holdout_share=0.0,
    )
    clock = ManualClock()
    runtime = Runtime.build(settings, clock=clock)
    runtime.start()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime=runtime), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started, "uvicorn did not start"
    engine = Served(runtime, f"http://127.0.0.1:{port}", clock)
    try:
        yield engine
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.http.close()
        runtime.stop()


def _setup_shopper(engine: Served) -> dict[str, Any]:
    http = engine.http
    for purpose in ("location_tracking", "marketing_offers"):
        notice = {"purpose": purpose, "version": "n-1", "text": f"We use {purpose}."}
        assert http.post("/v1/manager/notices", headers=MANAGER, json=notice).status_code == 201
    device = http.post(
        "/v1/sdk/devices",
        headers=SDK_KEY,
        json={"customer_ref": "walker", "platform": "android"},
    ).json()
    auth = {"Authorization": f"Bearer {device['token']}"}
    for purpose, channel in (("location_tracking", None), ("marketing_offers", "push")):
        consent = {"purpose": purpose, "channel": channel, "granted": True, "notice_version": "n-1"}
        assert http.post("/v1/sdk/consents", headers=auth, json=consent).status_code == 201
    return dict(device)


def test_console_login_campaign_track_and_funnel(served: Served, tmp_path: Path) -> None:
    sync_playwright = _need_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    device = _setup_shopper(served)
    upload = tmp_path / "stores.geojson"
    upload.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
        '{"id": "lp-1", "name": "Bold Street Coffee"}, "geometry": {"type": "Point", '
        '"coordinates": [-2.9800, 53.4020]}}]}'
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)  # a loaded 2-core CI machine renders slowly
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{served.base}/console")
            assert page.url.endswith("/console/login")
            page.fill("#key", "not-the-key")
            page.click("button[type=submit]")
            page.wait_for_selector("#login-error:not([hidden])")
            page.screenshot(path=str(ARTIFACTS / "01-login-refused.png"))
            page.fill("#key", INSECURE_KEYS["manager"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{served.base}/console")
            page.wait_for_selector("#status:has-text('ready')")
            cookie = next(c for c in page.context.cookies() if c["name"] == "oe_console")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            # a store added through the form, one imported from a file
            page.click("#store-add summary")
            page.fill("#store-form [name=name]", "Williamson Square Books")
            page.fill("#store-form [name=lon]", str(STORE[0]))
            page.fill("#store-form [name=lat]", str(STORE[1]))
            page.fill("#store-form [name=radius_m]", "60")
            page.fill("#store-form [name=tags]", "city")
            page.click("#store-form button[type=submit]")
            page.wait_for_selector("#store-rows td:has-text('Williamson Square Books')")
            page.set_input_files("#import-form input[type=file]", str(upload))
            page.click("#import-form button[type=submit]")
            page.wait_for_selector("#status:has-text('import: 1 created')")
            # the fences are drawn by Leaflet with no tile server
            page.wait_for_function(
                "document.querySelectorAll('#map path.leaflet-interactive').length === 2"
            )  # the map redraws after the import's answer
            assert page.locator("#map path.leaflet-interactive").count() == 2
            assert page.locator("#map img.leaflet-tile").count() == 0
            stores = served.http.get("/v1/manager/stores", headers=MANAGER).json()["items"]
            store = next(s for s in stores if s["name"] == "Williamson Square Books")
            assert store["tags"] == ["city"]
            page.screenshot(path=str(ARTIFACTS / "02-stores.png"), full_page=True)

            page.click("#new-campaign")
            page.fill("#campaign-form [name=name]", "Books at lunch")
            page.check(f"#store-choices input[value='{store['id']}']")
            page.check("#campaign-form input[name=trigger][value=dwell]")
            page.fill("#campaign-form [name=holdout_share]", "0")
            page.fill("[name=v_title]", "{discount} at {store}")
            page.fill("[name=v_body]", "Only until {expires_at}.")
            page.fill("[name=v_discount_text]", "2 for 1 paperbacks")
            page.screenshot(path=str(ARTIFACTS / "03-campaign-editor.png"), full_page=True)
            page.click("#campaign-form button[type=submit]")
            page.wait_for_selector("#campaign-rows td:has-text('Books at lunch')")
            row = page.inner_text("#campaign-rows")
            assert "enter, dwell" in row and "active" in row
            page.screenshot(path=str(ARTIFACTS / "04-campaign-listed.png"), full_page=True)

            # replay a short walk into the store through the SDK API
            track = [(-2.9960, 53.4075), (-2.9940, 53.4075), (-2.9918, 53.4075), STORE]
            issued = []
            for lon, lat in track:
                served.clock.advance(timedelta(seconds=40))
                issued += served.ping(device, lon, lat)["coupons"]
            served.clock.advance(timedelta(seconds=130))
            issued += served.ping(device, *STORE)["coupons"]
            assert len(issued) == 1  # entered (offer), dwelt (capped at one a day)
            page.wait_for_selector("#feed-items li:has-text('issued')", timeout=60_000)

            page.click("a[href='#analytics']")
            page.select_option("#analytics-campaign", label="Books at lunch")
            page.click("#analytics-form button[type=submit]")
            page.wait_for_selector("#funnel-rows tr")
            cells = page.locator("#funnel-rows tr").first.locator("td").all_inner_texts()
            heads = page.locator("#funnel-head th").all_inner_texts()
            counts = dict(zip(heads, cells, strict=True))
            assert counts["triggered"] == "2" and counts["issued"] == "1"
            assert counts["suppressed"] == "1" and counts["visited"] == "1"
            assert page.locator("#funnel-chart svg rect").count() >= 10
            page.screenshot(path=str(ARTIFACTS / "05-funnel.png"), full_page=True)

            page.click("a[href='#audit']")
            page.wait_for_selector("#audit-rows td:has-text('campaign.create')")
            actions = page.locator("#audit-rows tr td:nth-child(3)").all_inner_texts()
            assert {"campaign.create", "store.create", "store.import"} <= set(actions)
            page.screenshot(path=str(ARTIFACTS / "06-audit.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
