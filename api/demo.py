"""``offer-engine demo``: the whole path on the embedded default, driven through the HTTP API.

A manual clock moves the walk along: nothing sleeps waiting for time to pass. Deliveries run on
the real scheduler; the demo waits for their reports.
"""

from __future__ import annotations

import asyncio
import math
import queue
import re
import shutil
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from rich.console import Console

from api.app import create_app
from api.runtime import Runtime
from core.clock import ManualClock
from core.settings import INSECURE_KEYS, EmailBackend, Environment, Settings
from offers.delivery import DeliveryReport

# A small town around a square (Senate Square, Helsinki); stores are made up.
ORIGIN = (24.9525, 60.1692)
STORES = [
    ("Kahvila Aukio", 120, 0, 30),
    ("Leipomo Kulma", 320, 15, 25),
    ("Kirjakauppa", 520, -10, 35),
    ("Apteekki", 700, 200, 40),  # off the walk: never entered
]
STEP_M = 25.0
STEP_S = 20


def _offset(east_m: float, north_m: float) -> tuple[float, float]:
    lat = ORIGIN[1] + north_m / 111_320.0
    lon = ORIGIN[0] + east_m / (111_320.0 * math.cos(math.radians(ORIGIN[1])))
    return round(lon, 7), round(lat, 7)


def _check(response: Any, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: expected "
            f"{status}, got {response.status_code}: {response.text}"
        )
    body: dict[str, Any] = response.json()
    return body


def _path(link: str) -> str:
    """A link from an email, as a path for the in-process client."""
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def _confirmation_link(folder: Path) -> str:
    """The link in the (only) confirmation email the file backend wrote."""
    [eml] = sorted(folder.glob("confirm-*.eml"))
    text = message_from_bytes(eml.read_bytes()).get_payload(decode=True)
    assert isinstance(text, bytes)
    [link] = re.findall(r"https?://\S+/v1/consent/confirm\?token=\S+", text.decode())
    return str(link)


def _unsubscribe_link(folder: Path) -> str:
    """The List-Unsubscribe URL of the newest offer email."""
    eml = max(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime)
    return str(message_from_bytes(eml.read_bytes())["List-Unsubscribe"]).strip("<>")


def run_demo(data_dir: str) -> int:
    console = Console()
    folder = Path(data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    settings = Settings(
        environment=Environment.DEMO,
        database_url=f"sqlite:///{folder / 'demo.db'}",
        redis_url=None,
        email_backend=EmailBackend.FILE,
        email_file_dir=folder / "outbox",
        # The walk moves the manual clock about 7 minutes in a second or two, faster than the
        # scheduler's real-time heartbeat renews its lease: a lease that long outlives the walk.
        scheduler_lease_ttl_s=600,
    )
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    runtime = Runtime.build(settings, clock=clock)
    reports: queue.Queue[DeliveryReport] = queue.Queue()
    runtime.worker.listeners.append(reports.put)
    runtime.start()
    try:
        return asyncio.run(_run_walk(console, runtime, clock, reports, folder))
    finally:
        runtime.stop()


async def _run_walk(
    console: Console,
    runtime: Runtime,
    clock: ManualClock,
    reports: queue.Queue[DeliveryReport],
    folder: Path,
) -> int:
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.local") as client:
        return await _walk(console, client, clock, reports, folder)


def _print_report(console: Console, report: DeliveryReport) -> None:
    console.print(
        f"         delivery {report.channel}: [bold]{report.status}[/] "
        f"after {report.attempts} attempt(s)"
    )


async def _walk(
    console: Console,
    client: httpx.AsyncClient,
    clock: ManualClock,
    reports: queue.Queue[DeliveryReport],
    folder: Path,
) -> int:
    manager = {"X-API-Key": INSECURE_KEYS["manager"]}
    pos = {"X-API-Key": INSECURE_KEYS["pos"]}
    console.rule("[bold]Offer engine demo[/] (SQLite + in-process state, email to files)")

    names: dict[str, str] = {}
    store_ids: list[str] = []
    for name, east, north, radius in STORES:
        lon, lat = _offset(east, north)
        store = _check(
            await client.post(
                "/v1/manager/stores",
                headers=manager,
                json={
                    "name": name,
                    "timezone": "Europe/Helsinki",
                    "fence": {"lon": lon, "lat": lat, "radius_m": radius},
                },
            ),
            201,
        )
        names[store["id"]] = name
        store_ids.append(store["id"])
        console.print(f"store    {name:<14} fence r={radius} m at ({lon}, {lat})")
    campaign = _check(
        await client.post(
            "/v1/manager/campaigns",
            headers=manager,
            json={
                "name": "Morning walk-by",
                "store_ids": store_ids[:3],
                "daily_cap_per_shopper": 3,
                # One shopper walks: a holdout draw would withhold every offer one run in ten.
                "holdout_share": 0,
                "offer": {
                    "title": "Come in now",
                    "body": "You are just around the corner.",
                    "discount_text": "30% off",
                    "valid_minutes": 10,
                },
            },
        ),
        201,
    )
    console.print(f"campaign {campaign['name']!r}: 30% off, valid 10 min, at 3 of 4 stores\n")

    for purpose, text in (
        ("location_tracking", "We use your location near our stores to send you offers."),
        ("marketing_offers", "We send you short-lived offers by the channels you choose."),
    ):
        notice = {"purpose": purpose, "version": "demo-1", "text": text}
        _check(await client.post("/v1/manager/notices", headers=manager, json=notice), 201)
    device = _check(
        await client.post(
            "/v1/sdk/devices",
            headers={"X-API-Key": INSECURE_KEYS["sdk"]},
            json={
                "customer_ref": "shopper-42",
                "platform": "android",
                "email": "shopper42@example.com",
            },
        ),
        201,
    )
    sdk = {"Authorization": f"Bearer {device['token']}", "User-Agent": "demo-app/1.0"}
    for purpose, channel in (("location_tracking", None), ("marketing_offers", "email")):
        consent = _check(
            await client.post(
                "/v1/sdk/consents",
                headers=sdk,
                json={
                    "purpose": purpose,
                    "channel": channel,
                    "granted": True,
                    "notice_version": "demo-1",
                },
            ),
            201,
        )
        console.print(
            f"consent  {purpose}{'/' + channel if channel else ''} {consent['state']} "
            f"(ledger event {consent['event_id']}, {consent['event_hash'][:12]}...)"
        )
    link = _confirmation_link(folder / "outbox" / "consent")
    confirmed = _check(await client.get(_path(link), headers={"User-Agent": "demo-mail/1.0"}), 200)
    console.print(
        f"consent  marketing_offers/email {confirmed['state']} by the link in the confirmation "
        f"email (ledger event {confirmed['event_id']})"
    )
    console.print()

    coupons: list[dict[str, Any]] = []
    for step in range(int(760 / STEP_M)):
        clock.advance(timedelta(seconds=STEP_S))
        lon, lat = _offset(step * STEP_M, 0)
        result = _check(
            await client.post(
                "/v1/sdk/pings",
                headers=sdk,
                json={
                    "pings": [
                        {
                            "lon": lon,
                            "lat": lat,
                            "accuracy_m": 8,
                            "recorded_at": clock.now().isoformat(),
                        }
                    ]
                },
            ),
            200,
        )
        line = f"{clock.now():%H:%M:%S} ping ({lon}, {lat})"
        for event in result["events"]:
            line += f"  [cyan]{event['kind']} {names[event['store_id']]}[/]"
            if event["kind"] == "approaching":
                details = event["details"]
                line += f" (ETA {details['eta_s']:.0f} s, {details['distance_m']:.0f} m)"
        console.print(line)
        for coupon in result["coupons"]:
            coupons.append(coupon)
            console.print(
                f"         [green]coupon {coupon['code']}[/] {coupon['discount_text']} at "
                f"{names[coupon['store_id']]}, expires {coupon['expires_at'][11:19]} "
                f"-> {', '.join(coupon['channels'])}"
            )
            # The scheduler sends on its own thread; show its report as it comes in.
            for _ in coupon["channels"]:
                _print_report(console, reports.get(timeout=20))
    console.print(f"\n(offer emails are in {folder / 'outbox'})\n")

    # The shopper turns back to the last store passed; the first coupon will have run out.
    first, second = coupons[-1], coupons[0]
    clock.advance(timedelta(minutes=2))
    redeemed = _check(
        await client.post(
            "/v1/pos/redemptions",
            headers=pos,
            json={"code": first["code"], "store_id": first["store_id"]},
        ),
        200,
    )
    console.print(
        f"{clock.now():%H:%M:%S} till at {names[first['store_id']]}: {first['code']} "
        f"[green]redeemed[/] ({redeemed['discount_text']})"
    )
    again = _check(
        await client.post(
            "/v1/pos/redemptions",
            headers=pos,
            json={"code": first["code"], "store_id": first["store_id"]},
        ),
        409,
    )
    console.print(f"{clock.now():%H:%M:%S} till again: [yellow]409 {again['error']['message']}[/]")
    late_at = datetime.fromisoformat(second["expires_at"]) + timedelta(seconds=30)
    if late_at > clock.now():
        clock.set(late_at)
    late = _check(
        await client.post(
            "/v1/pos/redemptions",
            headers=pos,
            json={"code": second["code"], "store_id": second["store_id"]},
        ),
        410,
    )
    console.print(
        f"{clock.now():%H:%M:%S} till at {names[second['store_id']]}, late: "
        f"[red]410 {late['error']['message']}[/]"
    )

    _check(
        await client.post(
            "/v1/sdk/consents",
            headers=sdk,
            json={"purpose": "location_tracking", "granted": False, "notice_version": "demo-1"},
        ),
        201,
    )
    refused = _check(
        await client.post(
            "/v1/sdk/pings",
            headers=sdk,
            json={
                "pings": [
                    {"lon": ORIGIN[0], "lat": ORIGIN[1], "recorded_at": clock.now().isoformat()}
                ]
            },
        ),
        403,
    )
    console.print(
        f"consent  location_tracking withdrawn -> next ping [red]403[/] "
        f"{refused['error']['message']} (nothing stored)"
    )
    unsubscribed = _check(
        await client.post(
            _path(_unsubscribe_link(folder / "outbox")),
            data={"List-Unsubscribe": "One-Click"},
        ),
        200,
    )
    console.print(
        f"consent  one-click unsubscribe (an offer email's List-Unsubscribe) -> marketing_offers/"
        f"email {unsubscribed['state']} (ledger event {unsubscribed['event_id']})"
    )
    console.rule(
        f"{len(coupons)} coupons, 1 redeemed, 1 refused as already redeemed, 1 refused as expired"
    )
    return 0
