"""``offer-engine keys``: create, list, rotate and revoke API keys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated

import typer

from core.apikeys import ApiKeyAdmin, IssuedKey
from core.settings import Settings

keys_app = typer.Typer(
    help="API keys per role (sdk, manager, compliance, pos): stored hashed, shown once.",
    no_args_is_help=True,
)

DatabaseUrl = Annotated[str | None, typer.Option(help="Overrides OFFER_ENGINE_DATABASE_URL.")]
RedisUrl = Annotated[
    str | None,
    typer.Option(help="Overrides OFFER_ENGINE_REDIS_URL; API processes sharing it see changes."),
]


@contextmanager
def _admin(database_url: str | None, redis_url: str | None) -> Iterator[ApiKeyAdmin]:
    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory, upgrade_database
    from core.errors import EngineError
    from core.state import make_hot_state

    overrides: dict[str, object] = {}
    if database_url:
        overrides["database_url"] = database_url
    if redis_url:
        overrides["redis_url"] = redis_url
    settings = Settings(**overrides)  # type: ignore[arg-type]
    engine = make_engine(settings.database_url)
    state = make_hot_state(settings.redis_url, settings.redis_key_prefix)
    try:
        upgrade_database(engine)
        yield ApiKeyAdmin(make_session_factory(engine), state, SystemClock())
    except EngineError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    finally:
        state.close()
        engine.dispose()


def _show_issued(issued: IssuedKey) -> None:
    record = issued.record
    stores = ", ".join(record.stores) if record.stores else "all stores"
    scope = f" ({stores})" if record.role == "pos" else ""
    typer.echo(f"created {record.role} key {record.id}{scope}: {record.label}")
    typer.echo(issued.key)
    typer.echo("Store this key now: only its digest is kept, it cannot be shown again.", err=True)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Argument(help="sdk, manager, compliance or pos")],
    label: Annotated[
        str, typer.Option(help="What the key is for; a POS key names its terminal.")
    ] = "",
    store: Annotated[
        list[str] | None,
        typer.Option(help="POS keys only: a store id the terminal may redeem for (repeatable)."),
    ] = None,
    database_url: DatabaseUrl = None,
    redis_url: RedisUrl = None,
) -> None:
    """Make a key; the key itself is printed once, on its own line."""
    with _admin(database_url, redis_url) as admin:
        _show_issued(admin.create(role, label or f"{role} key", store or None))


@keys_app.command("list")
def keys_list(database_url: DatabaseUrl = None, redis_url: RedisUrl = None) -> None:
    """Every key: id, role, state, stores, label (never a secret)."""
    with _admin(database_url, redis_url) as admin:
        now = admin.clock.now()
        for record in admin.list():
            row = record.to_dict(now)
            stores = ",".join(row["stores"]) if row["stores"] else "-"
            until = f" until {row['expires_at']}" if row["expires_at"] else ""
            replaced = f" replaced by {row['replaced_by']}" if row["replaced_by"] else ""
            typer.echo(
                f"{row['id']}  {row['role']:<10} {row['state']:<8} stores={stores}  "
                f"{row['label']}{until}{replaced}"
            )


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="The id of the key to replace.")],
    overlap_s: Annotated[
        int, typer.Option(min=0, help="Seconds the old key stays valid (0: revoked at once).")
    ] = 0,
    database_url: DatabaseUrl = None,
    redis_url: RedisUrl = None,
) -> None:
    """Issue a new key with the same role, label and stores; retire the old one."""
    with _admin(database_url, redis_url) as admin:
        _show_issued(admin.rotate(key_id, timedelta(seconds=overlap_s)))
        typer.echo(
            f"old key {key_id} " + (f"valid for {overlap_s} s more" if overlap_s else "revoked"),
            err=True,
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The id of the key to revoke.")],
    database_url: DatabaseUrl = None,
    redis_url: RedisUrl = None,
) -> None:
    """Revoke a key at once."""
    with _admin(database_url, redis_url) as admin:
        record = admin.revoke(key_id)
        typer.echo(f"revoked {record.role} key {record.id}")
