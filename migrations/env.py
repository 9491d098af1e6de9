"""Alembic environment. The engine comes from ``core.db.upgrade_database`` (config attribute
``engine``) or, for the ``alembic`` command line, from ``OFFER_ENGINE_DATABASE_URL``."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Engine

# Importing the model modules registers their tables on the metadata.
import consent.models  # noqa: F401
import core.apikeys
import core.audit  # noqa: F401
import geo.models  # noqa: F401
import offers.models  # noqa: F401
from core.db import Base, make_engine

config = context.config
target_metadata = Base.metadata

# Tables owned by libraries, created here so one migration history covers the whole schema.
LIBRARY_TABLES = {"apscheduler_jobs"}


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    return not (type_ == "table" and name in LIBRARY_TABLES)


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    url = os.environ.get("OFFER_ENGINE_DATABASE_URL", "sqlite:///data/offer-engine.db")
    return make_engine(url)


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
