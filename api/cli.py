"""The ``offer-engine`` command."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from api.cli_keys import keys_app
from core.settings import Settings

if TYPE_CHECKING:
    from consent.ledger import LedgerConfig

app = typer.Typer(
    help="Location-aware, permission-first offer engine.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
stores_app = typer.Typer(help="Stores and their fences.", no_args_is_help=True)
app.add_typer(stores_app, name="stores")
bench_app = typer.Typer(
    help="Benchmarks (run by hand; each ends with a RESULT line).", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
consent_app = typer.Typer(
    help="The consent ledger: export a range, verify a file or the database.",
    no_args_is_help=True,
)
app.add_typer(consent_app, name="consent")
app.add_typer(keys_app, name="keys")


@app.command()
def demo(
    data_dir: Annotated[
        str, typer.Option(help="Where the demo's database and emails go.")
    ] = "data/demo",
) -> None:
    """Replay a shopper's walk past a small town of stores, end to end, on the embedded default."""
    from api.demo import run_demo

    raise typer.Exit(run_demo(data_dir))


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="OFFER_ENGINE_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OFFER_ENGINE_PORT")] = 8000,
    database_url: Annotated[
        str | None, typer.Option(help="Overrides OFFER_ENGINE_DATABASE_URL.")
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Overrides OFFER_ENGINE_REDIS_URL.")] = None,
    scheduler: Annotated[
        bool, typer.Option(help="Run the delivery scheduler in this process.")
    ] = True,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="API worker processes (needs a Redis URL if > 1).")
    ] = 1,
) -> None:
    """Run the HTTP API (and, by default, the scheduler) in one process, or in ``--workers``."""
    import uvicorn

    from api.app import create_app

    overrides: dict[str, object] = {"run_scheduler": scheduler}
    if database_url:
        overrides["database_url"] = database_url
    if redis_url:
        overrides["redis_url"] = redis_url
    settings = Settings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)  # a line per job run
    from api.logfilter import install_redaction, uvicorn_log_config

    install_redaction()
    if workers == 1:
        app = create_app(settings, server_process=True)
        uvicorn.run(app, host=host, port=port, log_config=uvicorn_log_config())
        return
    if not settings.uses_shared_state:
        raise typer.BadParameter("several workers share hot state: set a Redis URL")
    # each worker process builds its own app from the environment
    os.environ["OFFER_ENGINE_RUN_SCHEDULER"] = str(scheduler).lower()
    for name, value in (("DATABASE_URL", database_url), ("REDIS_URL", redis_url)):
        if value:
            os.environ[f"OFFER_ENGINE_{name}"] = value
    uvicorn.run(
        "api.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_config=uvicorn_log_config(),
    )


@app.command("scheduler")
def run_scheduler_only(
    database_url: Annotated[
        str | None, typer.Option(help="Overrides OFFER_ENGINE_DATABASE_URL.")
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Overrides OFFER_ENGINE_REDIS_URL.")] = None,
) -> None:
    """Run only the timed work (sends, reminders, expiry, campaign start/stop), no HTTP.

    Start it in as many processes as you like: one leads (it holds the lease), the others stand
    by and take over within the lease TTL when the leader dies. Stops on SIGTERM or Ctrl-C,
    handing the lease over at once.
    """
    import signal
    import threading

    from api.runtime import Runtime

    overrides: dict[str, object] = {"run_scheduler": True}
    if database_url:
        overrides["database_url"] = database_url
    if redis_url:
        overrides["redis_url"] = redis_url
    settings = Settings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per job run
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runtime = Runtime.build(settings)
    runtime.start()
    typer.echo(f"scheduler {runtime.scheduler.lease.holder} started", err=True)
    try:
        stop.wait()
    finally:
        runtime.stop()


@app.command()
def simulate(
    track: Annotated[Path, typer.Option(help="A GPX file, or a CSV with time and lat/lon.")],
    stores: Annotated[
        Path | None,
        typer.Option(help="Stores file to import (as `stores import`); else placed on the track."),
    ] = None,
    speedup: Annotated[
        float, typer.Option(min=0, help="Replay N times faster than recorded; 0: no pauses.")
    ] = 60.0,
    server: Annotated[
        str | None, typer.Option(help="Base URL of a running engine; default: embedded.")
    ] = None,
    trip: Annotated[
        str | None, typer.Option(help="CSV with a trip column: the trip to replay.")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=1000, help="Fixes per upload.")] = 5,
    sdk_key: Annotated[str | None, typer.Option(envvar="OFFER_ENGINE_SDK_API_KEY")] = None,
    manager_key: Annotated[str | None, typer.Option(envvar="OFFER_ENGINE_MANAGER_API_KEY")] = None,
) -> None:
    """Replay a recorded track through the SDK API and show pings, fence events and coupons."""
    from api.simulate_view import run_simulation

    raise typer.Exit(
        run_simulation(
            track, stores, speedup, server, trip, batch, sdk_key=sdk_key, manager_key=manager_key
        )
    )


@app.command()
def openapi(
    out: Annotated[
        Path | None, typer.Option(help="Write here (e.g. docs/openapi.json); default: stdout.")
    ] = None,
) -> None:
    """Print or write the OpenAPI document of this version of the API."""
    from api.openapi_doc import current_document

    document = current_document()
    if out is None:
        typer.echo(document, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(document, encoding="utf-8")
        typer.echo(f"wrote {out}")


@db_app.command("upgrade")
def db_upgrade(
    database_url: Annotated[
        str | None, typer.Option(help="Overrides OFFER_ENGINE_DATABASE_URL.")
    ] = None,
) -> None:
    """Apply all migrations."""
    from core.db import make_engine, upgrade_database

    settings = Settings(**({"database_url": database_url} if database_url else {}))  # type: ignore[arg-type]
    engine = make_engine(settings.database_url)
    upgrade_database(engine)
    engine.dispose()
    typer.echo(f"schema up to date: {engine.url.render_as_string(hide_password=True)}")


@stores_app.command("import")
def stores_import(
    file: Annotated[
        Path,
        typer.Argument(
            help=".geojson/.json, .gpkg, .zip (zipped Shapefile) or .csv (lon/lat columns)."
        ),
    ],
    radius: Annotated[
        float, typer.Option(help="Circle radius in metres for points without a radius column.")
    ] = 50.0,
    id_column: Annotated[
        str | None, typer.Option(help="External id column (default: external_id, id, osm_id).")
    ] = None,
    name_column: Annotated[str | None, typer.Option(help="Name column (default: name).")] = None,
    timezone: Annotated[str, typer.Option(help="IANA time zone of every imported store.")] = "UTC",
    layer: Annotated[str | None, typer.Option(help="Layer of a multi-layer file.")] = None,
    crs: Annotated[
        str | None,
        typer.Option(help="CRS of the coordinates when the file declares none (CSV: EPSG:4326)."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Overrides OFFER_ENGINE_DATABASE_URL.")
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Overrides OFFER_ENGINE_REDIS_URL.")] = None,
) -> None:
    """Create or update stores from a file, by external id; re-importing changes nothing."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from api.runtime import Runtime
    from core.errors import InvalidInput
    from geo.ingest import ImportOptions, StoreImporter

    errors = Console(stderr=True)
    if not file.is_file():
        errors.print(f"error: file not found: {file}", markup=False, highlight=False)
        raise typer.Exit(2)
    overrides: dict[str, object] = {"run_scheduler": False}
    if database_url:
        overrides["database_url"] = database_url
    if redis_url:
        overrides["redis_url"] = redis_url
    runtime = Runtime.build(Settings(**overrides))  # type: ignore[arg-type]
    options = ImportOptions(
        radius_m=radius,
        id_column=id_column,
        name_column=name_column,
        timezone=timezone,
        layer=layer,
        crs=crs,
    )
    try:
        runtime.start(migrate=True)
        columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*Progress.get_default_columns()[:1], *columns, console=errors) as bar:
            task = bar.add_task(f"importing {file.name}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = StoreImporter(runtime.sessions, runtime.clock).run(
                file, options, progress=progress, on_done=runtime.fences.announce_change
            )
    except InvalidInput as exc:
        errors.print(f"error: {exc.message}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    finally:
        runtime.stop()
    _print_report(report.to_dict(max_rejected=20))


def _print_report(report: dict[str, object]) -> None:
    layer = f", layer {report['layer']}" if report["layer"] else ""
    typer.echo(
        f"{report['file']} ({report['format']}{layer}, {report['source_crs']}): "
        f"imported {report['imported']} of {report['total_rows']} rows"
    )
    typer.echo(
        f"  created {report['created']}, updated {report['updated']}, "
        f"unchanged {report['unchanged']}, rejected {report['rejected_count']}"
    )
    for note in report["notes"]:  # type: ignore[attr-defined]
        typer.echo(f"  note: {note}")
    rejected: list[dict[str, object]] = report["rejected"]  # type: ignore[assignment]
    if rejected:
        typer.echo(f"rejected rows (first {len(rejected)} of {report['rejected_count']}):")
        for item in rejected:
            typer.echo(f"  row {item['row']}: {item['reason']}")


@bench_app.command("geo")
def bench_geo(
    fences: Annotated[
        int, typer.Option(min=1, help="Store fences (16-gons, clustered).")
    ] = 100_000,
    pings: Annotated[
        int, typer.Option(min=1, help="Pings, in one-device batches of 1,000.")
    ] = 1_000_000,
    database_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL for the PostGIS comparison.")
    ] = None,
    postgis_pings: Annotated[int, typer.Option(min=1000, help="Pings sent to PostGIS.")] = 100_000,
    repeat: Annotated[
        int,
        typer.Option(min=1, max=20, help="Runs of each in-process measurement; the best counts."),
    ] = 5,
) -> None:
    """Engine batch matcher vs bare STRtree vs PostGIS on the same data."""
    from api.bench.geo import run_geo_bench

    url = database_url or os.environ.get("OFFER_ENGINE_DATABASE_URL")
    result = run_geo_bench(
        fences, pings, url, postgis_sample=postgis_pings, repeat=repeat, say=typer.echo
    )
    typer.echo(result.result_line())


@bench_app.command("consent")
def bench_consent(
    events: Annotated[int, typer.Option(min=1, help="Ledger entries to append.")] = 1_000_000,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL URL (a fresh schema is used, then dropped); default: SQLite."
        ),
    ] = None,
    full_path: Annotated[
        int, typer.Option(min=1, help="Entries appended through ConsentLedger.record.")
    ] = 5_000,
    repeat: Annotated[
        int, typer.Option(min=1, help="Export+verify runs (fresh processes); the fastest counts.")
    ] = 3,
) -> None:
    """Append N consent events, export them as NDJSON and verify the file."""
    from api.bench.consent import run_consent_bench

    result = run_consent_bench(
        events, database_url, full_path=full_path, repeat=repeat, say=typer.echo
    )
    typer.echo(result.result_line())


@bench_app.command("api")
def bench_api(
    database_url: Annotated[
        str, typer.Option(help="PostgreSQL (a fresh schema is used, then dropped).")
    ] = "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    redis_url: Annotated[str, typer.Option(help="Redis (a fresh key prefix, then deleted).")] = (
        "redis://127.0.0.1:6379/0"
    ),
    workers: Annotated[int, typer.Option(min=1, max=16, help="uvicorn worker processes.")] = 2,
    devices: Annotated[int, typer.Option(min=1, max=10_000)] = 32,
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Fixes per request.")] = 500,
    batches_per_device: Annotated[int, typer.Option(min=1, max=1000)] = 8,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Batch connections.")] = 8,
    fences: Annotated[int, typer.Option(min=1, max=100_000)] = 400,
    single_rate: Annotated[float, typer.Option(min=1, max=20_000, help="Requests/s.")] = 1000,
    single_seconds: Annotated[float, typer.Option(min=1, max=300)] = 10,
    max_seconds: Annotated[float, typer.Option(min=1, max=600, help="Per batch phase.")] = 60,
) -> None:
    """The HTTP API under load from a separate process, next to a bare endpoint of its shape."""
    from api.bench.api import ApiBenchOptions, run_api_bench

    options = ApiBenchOptions(
        database_url,
        redis_url,
        workers,
        devices,
        batch_size,
        batches_per_device,
        concurrency,
        fences,
        single_rate,
        single_seconds,
        max_seconds,
    )
    result = run_api_bench(options, say=typer.echo)
    typer.echo(result.line())


@bench_app.command("coupons")
def bench_coupons(
    coupons: Annotated[
        int, typer.Option(min=1, help="Coupons scheduled, one send each.")
    ] = 100_000,
    rate: Annotated[
        float, typer.Option(min=1, help="Sends falling due per second, from a common start.")
    ] = 400.0,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL URL (a fresh schema is used, then dropped); default: SQLite."
        ),
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL for hot state.")] = None,
    threads: Annotated[int, typer.Option(min=1, max=256, help="Sending threads.")] = 8,
) -> None:
    """Schedule N coupon sends and deliver them to a local HTTP sink through the scheduler."""
    from api.bench.coupons import run_coupon_bench

    logging.basicConfig(level=logging.WARNING)
    result = run_coupon_bench(
        coupons,
        rate=rate,
        database_url=database_url,
        redis_url=redis_url,
        threads=threads,
        say=typer.echo,
    )
    typer.echo(result.result_line())


def _instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 instant: {value!r}", param_hint=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _database_url(database_url: str | None) -> str:
    return (
        database_url
        or os.environ.get("OFFER_ENGINE_DATABASE_URL")
        or str(Settings.model_fields["database_url"].default)
    )


def _ledger_config(settings: Settings) -> LedgerConfig:
    """The same keys as the engine's (``Runtime.build``): derived from the secret key."""
    from datetime import timedelta

    from consent.crypto import CheckpointSigner, EvidenceSealer
    from consent.ledger import LedgerConfig

    secret = settings.secret_key.get_secret_value()
    return LedgerConfig(
        EvidenceSealer(secret),
        CheckpointSigner(secret),
        timedelta(days=settings.consent_max_age_days),
        settings.ledger_checkpoint_every,
    )


@consent_app.command("export")
def consent_export(
    start: Annotated[
        str | None,
        typer.Option("--from", help="Entries recorded at or after (ISO 8601; no zone = UTC)."),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Entries recorded before.")] = None,
    from_id: Annotated[int | None, typer.Option(min=1, help="First entry id.")] = None,
    to_id: Annotated[int | None, typer.Option(min=1, help="Last entry id.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="ndjson or csv.")] = "ndjson",
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Overrides OFFER_ENGINE_DATABASE_URL.")
    ] = None,
) -> None:
    """Export the ledger for a range, with the checkpoints that make it verifiable offline.
    The export is audited (actor cli:<user>) and signs a checkpoint of its last entry."""
    import getpass
    import sys

    from consent.export import LedgerExporter, LedgerRange
    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory
    from core.errors import InvalidInput

    if fmt not in ("ndjson", "csv"):
        raise typer.BadParameter("ndjson or csv", param_hint="--format")
    overrides = {"database_url": database_url} if database_url else {}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    engine = make_engine(settings.database_url)
    exporter = LedgerExporter(make_session_factory(engine), _ledger_config(settings), SystemClock())
    try:
        wanted = LedgerRange(_instant(start, "--from"), _instant(end, "--to"), from_id, to_id)
        plan = exporter.begin(wanted, fmt=fmt, actor=f"cli:{getpass.getuser()}")
        chunks = exporter.ndjson(plan) if fmt == "ndjson" else exporter.csv(plan)
        if out is None:
            for chunk in chunks:
                sys.stdout.write(chunk)
        else:
            with out.open("w", encoding="utf-8", newline="") as handle:
                for chunk in chunks:
                    handle.write(chunk)
    except InvalidInput as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    span = f"entries {plan.first_id}..{plan.last_id}" if plan.first_id else "no entries"
    typer.echo(f"exported {span} as {fmt}{f' to {out}' if out else ''}", err=True)


@consent_app.command("verify")
def consent_verify(
    file: Annotated[
        Path | None,
        typer.Argument(help="An export (NDJSON or CSV; '-' for stdin). Omit to verify a database."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Verify this database (default OFFER_ENGINE_DATABASE_URL).")
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            help="Trusted Ed25519 public key (hex): every checkpoint must be signed by it."
        ),
    ] = None,
) -> None:
    """Verify offline: exit 0 with a summary when intact, 1 naming the first bad record."""
    import sys

    from consent.verify import verify_database, verify_file, verify_stream
    from core.db import make_engine, make_session_factory

    if file is not None and database_url:
        typer.echo("error: give a FILE or --database-url, not both", err=True)
        raise typer.Exit(2)
    if file is not None and str(file) == "-":
        result = verify_stream(sys.stdin, trusted_key=public_key, source="stdin")
    elif file is not None:
        if not file.is_file():
            typer.echo(f"error: file not found: {file}", err=True)
            raise typer.Exit(2)
        result = verify_file(file, trusted_key=public_key)
    else:
        engine = make_engine(_database_url(database_url))
        try:
            result = verify_database(make_session_factory(engine), trusted_key=public_key)
        finally:
            engine.dispose()
    typer.echo(result.summary())
    raise typer.Exit(0 if result.ok else 1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
