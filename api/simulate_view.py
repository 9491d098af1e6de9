"""The simulator's terminal view: a rich progress bar with live counts, a line per fence event
and coupon, and a summary table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.simulate import Summary, embedded_client, replay, server_shift
from api.tracks import read_track
from client import ApiError, OfferEngineClient
from core.errors import InvalidInput


def _status(summary: Summary) -> str:
    counts = summary.counts()
    kinds = " ".join(f"{k} {counts[k]}" for k in ("enter", "dwell", "exit", "approaching"))
    return f"pings {summary.pings} | {kinds} | coupons {len(summary.coupons)}"


def print_summary(console: Console, summary: Summary) -> None:
    table = Table(title=f"Replay of {summary.track}", show_header=False)
    table.add_row("stores in the campaign", str(summary.stores))
    table.add_row("pings sent / accepted", f"{summary.pings} / {summary.accepted}")
    table.add_row("ignored", ", ".join(f"{k} {v}" for k, v in summary.ignored.items()) or "none")
    table.add_row("batches", str(summary.batches))
    for kind, count in sorted(summary.counts().items()):
        table.add_row(f"{kind} events", str(count))
    table.add_row("coupons", str(len(summary.coupons)))
    console.print(table)


def run_simulation(
    track_path: Path,
    stores: Path | None,
    speedup: float,
    server: str | None,
    trip: str | None,
    batch: int,
    *,
    sdk_key: str | None = None,
    manager_key: str | None = None,
    console: Console | None = None,
) -> int:
    console = console or Console()
    try:
        track = read_track(track_path, trip)
    except InvalidInput as exc:
        console.print(f"[red]{exc.message}[/]")
        return 2
    if stores is not None and not stores.is_file():
        console.print(f"[red]no stores file at {stores}[/]")
        return 2
    span = track.fixes[-1].at - track.fixes[0].at
    console.print(
        f"track {track.name}: {len(track.fixes)} fixes over {span} "
        f"({track.note or 'times as recorded'}); speed-up {speedup:g}x"
    )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    seen = {"events": 0, "coupons": 0}

    def on_batch(summary: Summary, total: int) -> None:
        for event in summary.events[seen["events"] :]:
            progress.console.print(f"{event.at:%H:%M:%S} [cyan]{event.kind:<11}[/] {event.store}")
        for code, store, discount in summary.coupons[seen["coupons"] :]:
            progress.console.print(f"         [green]coupon {code}[/] {discount} at {store}")
        seen["events"], seen["coupons"] = len(summary.events), len(summary.coupons)
        progress.update(task, completed=summary.pings, description=_status(summary))

    task = progress.add_task("starting", total=len(track.fixes))
    try:
        with progress:
            if server is None:
                with embedded_client(track.fixes[0].at) as (client, set_clock):
                    summary = replay(
                        client,
                        track,
                        stores_file=stores,
                        speedup=speedup,
                        batch_size=batch,
                        shift=timedelta(0),
                        set_clock=set_clock,
                        on_batch=on_batch,
                    )
            else:
                if not (sdk_key and manager_key):
                    console.print("[red]--server needs --sdk-key and --manager-key[/]")
                    return 2
                with OfferEngineClient(server, sdk_key=sdk_key, manager_key=manager_key) as client:
                    summary = replay(
                        client,
                        track,
                        stores_file=stores,
                        speedup=speedup,
                        batch_size=batch,
                        shift=server_shift(track, datetime.now(UTC)),
                        set_clock=None,
                        on_batch=on_batch,
                    )
    except ApiError as exc:
        console.print(f"[red]the engine refused: {exc}[/]")
        return 1
    except httpx.TransportError as exc:
        console.print(f"[red]cannot reach the engine at {server}: {exc}[/]")
        return 1
    print_summary(console, summary)
    return 0
