"""The ``offer-engine`` command."""

from __future__ import annotations

import logging
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
