"""Database plumbing: declarative base, UTC timestamps, engines, sessions and migrations."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way in and out, on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store timezone-aware UTC instants")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


PING_AFTER_IDLE_S = 1.0


def make_engine(url: str, *, ping_after_idle_s: float = PING_AFTER_IDLE_S, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout. A server's
    pooled connection is checked before use only when it has been idle for longer than
    ``ping_after_idle_s`` (see ``_ping_when_idle``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL loses no committed transaction when the process dies (kill -9);
            # only an OS crash or power cut can drop the last few. It saves an fsync per commit.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_use_lifo", True)  # the busy connection stays busy, the rest idle
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, ping_after_idle_s)
    return engine


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Check a pooled connection with a round trip before use only when it has been idle for
    longer than ``idle_s``; a dead one is replaced (the pool connects afresh).

    A check on every checkout (``pool_pre_ping``) is one more round trip on every transaction,
    which under load waits for a busy server like any other. A connection in steady use has
    just proved itself; one that broke while in use (the server restarted under load) fails
    its statement once, and the pool then replaces every connection older than that failure."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since <= idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"an idle pooled connection is dead: {exc}") from exc


TableRows = tuple[str, Sequence[str], Sequence[Sequence[Any]]]


def insert_at_once(engine: Engine, tables: Sequence[TableRows]) -> None:
    """Rows for one or more tables, (table, columns, rows) each, in a single statement committed
    on its own: one round trip to PostgreSQL (data-modifying CTEs; a statement is atomic), where
    a transaction would take four (``BEGIN``, an insert per table, ``COMMIT``).

    For the ping path's small writes that need nothing else in their transaction. Each table's
    rows travel as one JSON parameter that ``json_populate_recordset`` turns into rows of the
    table's own type, so the statement's text depends only on which tables get rows, never on
    how many: the driver converts it once and then prepares it on the server, where a
    ``VALUES`` list with a placeholder per value was a new statement, converted anew, for every
    group size. Values: str, int, float, bool, None, dict or list (a JSON column), and
    timezone-aware datetimes. Table and column names are the caller's constants, never input.

    Raises ``ValueError`` (before anything is sent) for a value JSON cannot carry exactly: a
    NaN or infinite float, a naive datetime, any other type."""
    statement = _one_statement(tables)
    if statement is None:
        return
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.exec_driver_sql(*statement)


def insert_together(connection: Connection, tables: Sequence[TableRows]) -> None:
    """``insert_at_once`` inside the caller's transaction, on its connection: one statement
    (one round trip) where an insert per table takes one each."""
    statement = _one_statement(tables)
    if statement is not None:
        connection.exec_driver_sql(*statement)


def _one_statement(tables: Sequence[TableRows]) -> tuple[str, tuple[str, ...]] | None:
    parts = [(table, columns, rows) for table, columns, rows in tables if rows]
    if not parts:
        return None
    statements: list[str] = []
    params: list[str] = []
    for table, columns, rows in parts:
        names = ", ".join(columns)
        statements.append(
            f"INSERT INTO {table} ({names}) "
            f"SELECT {names} FROM json_populate_recordset(NULL::{table}, %s)"
        )
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        params.append(json.dumps(records, allow_nan=False, default=_json_instant))
    *first, last = statements
    ctes = ", ".join(f"w{i} AS ({statement})" for i, statement in enumerate(first))
    return (f"WITH {ctes} {last}" if ctes else last), tuple(params)


def _json_instant(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store timezone-aware UTC instants")
        return value.isoformat()
    raise ValueError(f"{type(value).__name__} cannot be written by insert_at_once")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's transaction has committed (never before, never on
    rollback). Used to tell the scheduler about new outbox rows."""
    session.info.setdefault("on_commit", []).append(callback)


def after_transaction(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's transaction has ended, committed (after the
    ``on_commit`` hooks) or rolled back. Used to release what the transaction held."""
    session.info.setdefault("after_transaction", []).append(callback)


def _run_hooks(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a hook must never undo a committed fact
            log.exception("after-transaction hook failed")


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, then run ``on_commit`` hooks
    (after a commit only) and ``after_transaction`` hooks (either way). A unit that never
    began a transaction (no query, nothing added) has nothing to commit: the session's own
    commit of nothing costs more than the rest of such a unit (the ping path's one-statement
    groups, which write outside the session)."""
    session = factory()
    try:
        yield session
        if session.in_transaction():
            session.commit()
    except BaseException:
        session.rollback()
        session.info.pop("on_commit", None)
        _run_hooks(session.info.pop("after_transaction", []))
        raise
    finally:
        session.close()
    _run_hooks(session.info.pop("on_commit", []))
    _run_hooks(session.info.pop("after_transaction", []))


def alembic_config(engine: Engine) -> Config:
    script_location = str(resources.files("migrations"))
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["engine"] = engine
    return config


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (same migrations on SQLite and PostgreSQL)."""
    command.upgrade(alembic_config(engine), revision)
