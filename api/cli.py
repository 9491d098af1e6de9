"""The ``offer-engine`` command."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from core.settings import Settings

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
) -> None:
    """Run the HTTP API (and, by default, the scheduler) in one process."""
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
    uvicorn.run(create_app(settings), host=host, port=port)


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
) -> None:
    """Engine batch matcher vs bare STRtree vs PostGIS on the same data."""
    from api.bench.geo import run_geo_bench

    url = database_url or os.environ.get("OFFER_ENGINE_DATABASE_URL")
    result = run_geo_bench(fences, pings, url, postgis_sample=postgis_pings, say=typer.echo)
    typer.echo(result.result_line())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
