"""The same migrations on SQLite and PostgreSQL, matching the models exactly."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from core.db import alembic_config, upgrade_database
from tests.conftest import Stack

EXPECTED_TABLES = {
    "stores",
    "fences",
    "pings",
    "fence_events",
    "subjects",
    "devices",
    "consent_events",
    "consent_states",
    "campaigns",
    "campaign_stores",
    "offers",
    "coupons",
    "deliveries",
    "offer_decisions",
    "coupon_opens",
    "apscheduler_jobs",
    "api_keys",
    "alembic_version",
}


def test_migrations_go_up_down_and_up_again(stack: Stack) -> None:
    engine = stack.engine()
    try:
        upgrade_database(engine)
        assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
        command.downgrade(alembic_config(engine), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade_database(engine)
        assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
    finally:
        engine.dispose()


def test_models_and_migrations_agree(stack: Stack) -> None:
    engine = stack.engine()
    try:
        upgrade_database(engine)
        command.check(alembic_config(engine))  # raises when autogenerate would find a difference
    finally:
        engine.dispose()
