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
from playwright.sync_api import expect, sync_playwright

from api.app import create_app
from api.runtime import Runtime
from core.clock import ManualClock
from core.settings import INSECURE_KEYS, EmailBackend, Environment, Settings
from geo.hours import DAYS
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


def _need_browser() -> None:
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (Debian packages chromium, chromium-driver)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


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
    _need_browser()
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
            _add_store(page, "Williamson Square Books", radius_m="60", tags="city")
            page.set_input_files("#import-form input[type=file]", str(upload))
            page.click("#import-form button[type=submit]")
            page.wait_for_selector("#status:has-text('import: 1 created')")
            # the fences are drawn by Leaflet with no tile server
            # The map redraws after the import's answer. Playwright's own wait (not a page
            # function: the console's CSP forbids eval, which polling a function needs).
            expect(page.locator("#map path.leaflet-interactive")).to_have_count(2)
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


def _log_in(page: Any, base: str) -> None:
    page.goto(f"{base}/console")
    page.fill("#key", INSECURE_KEYS["manager"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console")
    page.wait_for_selector("#status:has-text('ready')")


def _add_store(page: Any, name: str, **fields: str) -> None:
    """Through the store form, at ``STORE`` unless told otherwise; wait until it is listed."""
    if not page.is_visible("#store-form"):
        page.click("#store-add summary")
    values = {"name": name, "lon": str(STORE[0]), "lat": str(STORE[1]), **fields}
    for field, value in values.items():
        page.fill(f"#store-form [name={field}]", value)
    page.click("#store-form button[type=submit]")
    page.wait_for_selector(f"#store-rows td:has-text('{name}')")


def _campaign(engine: Served, name: str) -> dict[str, Any]:
    items = engine.http.get("/v1/manager/campaigns", headers=MANAGER).json()["items"]
    return dict(next(c for c in items if c["name"] == name))


def test_console_sets_hours_schedule_budget_and_variants(served: Served) -> None:
    """What a manager sets in the browser alone: a store's opening hours; a campaign's schedule,
    daily issuing hours, store cooldown and budget; a variant's cost, its switch-off, a new
    variant; pause and resume. Each is read back through the API."""
    _need_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    every_day = lambda start, end: {d: [[start, end]] for d in DAYS}  # noqa: E731
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            _log_in(page, served.base)
            _add_store(page, "Harbour Books", opens="09:00", closes="18:00")
            [store] = served.http.get("/v1/manager/stores", headers=MANAGER).json()["items"]
            assert store["opening_hours"] == every_day("09:00", "18:00")
            assert "09:00\u201318:00 daily" in page.inner_text("#store-rows")

            page.click("#new-campaign")
            form = "#campaign-form"
            page.fill(f"{form} [name=name]", "Lunch books")
            page.check(f"#store-choices input[value='{store['id']}']")
            page.fill(f"{form} [name=starts_at]", "2026-12-01T08:00")
            page.fill(f"{form} [name=ends_at]", "2026-12-31T20:00")
            page.fill(f"{form} [name=active_from]", "11:00")
            page.fill(f"{form} [name=active_until]", "14:00")
            page.fill(f"{form} [name=store_cooldown_minutes]", "30")
            page.fill(f"{form} [name=max_coupons]", "500")
            page.fill(f"{form} [name=max_liability]", "100000")
            page.fill("[name=v_title]", "{discount} at {store}")
            page.fill("[name=v_body]", "Until {expires_at}.")
            page.fill("[name=v_discount_text]", "5 EUR off")
            page.fill("[name=v_discount_amount]", "500")
            page.click(f"{form} button[type=submit]")
            page.wait_for_selector("#campaign-rows td:has-text('Lunch books')")
            made = _campaign(served, "Lunch books")
            assert made["starts_at"].startswith("2026-12-01T08:00")
            assert made["ends_at"].startswith("2026-12-31T20:00")
            assert made["active_hours"] == every_day("11:00", "14:00")
            assert made["store_cooldown_minutes"] == 30
            assert made["budget"]["max_coupons"] == 500
            assert made["budget"]["max_liability"] == 100000
            assert [o["discount_amount"] for o in made["offers"]] == [500]

            # the editor shows what is set; clear the coupon cap, add B, switch A off
            page.click("button[aria-label='Edit Lunch books']")
            assert page.input_value(f"{form} [name=max_coupons]") == "500"
            assert page.input_value(f"{form} [name=active_from]") == "11:00"
            page.fill(f"{form} [name=max_coupons]", "")
            page.click("#add-variant")
            second = "#variants .variant >> nth=1"
            page.fill(f"{second} >> [name=v_title]", "{store}: {discount}")
            page.fill(f"{second} >> [name=v_body]", "Today only.")
            page.fill(f"{second} >> [name=v_discount_text]", "10% off")
            # a liability budget needs each active variant's cost (0 would never count)
            page.fill(f"{second} >> [name=v_discount_amount]", "300")
            page.uncheck("#variants .variant >> nth=0 >> [name=v_active]")
            page.screenshot(path=str(ARTIFACTS / "07-rules-and-variants.png"), full_page=True)
            page.click(f"{form} button[type=submit]")
            page.wait_for_selector(form, state="hidden")  # closed once every call succeeded
            assert page.is_hidden("#error"), page.inner_text("#error")
            edited = _campaign(served, "Lunch books")
            assert edited["budget"]["max_coupons"] is None
            assert edited["budget"]["max_liability"] == 100000
            assert {o["name"]: o["active"] for o in edited["offers"]} == {"A": False, "B": True}
            assert [o["discount_amount"] for o in edited["offers"]] == [500, 300]

            page.click("button[aria-label='Pause Lunch books']")
            page.wait_for_selector("button[aria-label='Resume Lunch books']")
            assert _campaign(served, "Lunch books")["status"] == "paused"
            page.click("button[aria-label='Resume Lunch books']")
            page.wait_for_selector("button[aria-label='Pause Lunch books']")
            assert _campaign(served, "Lunch books")["status"] == "active"
            assert errors == []
        finally:
            browser.close()
