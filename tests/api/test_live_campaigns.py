"""Offer decisions take campaigns from memory (``offers.live_campaigns``) and still decide on
every committed change: through the manager API, by a statement, from another process, and
after a lost announcement once the copy is older than its limit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text, update

from core.db import transaction
from offers.live_campaigns import LiveCampaigns
from offers.models import Campaign
from tests.api.conftest import INSIDE, MANAGER, OUTSIDE, Engine, EngineFactory
from tests.conftest import Stack

CATALOGUE_TABLES = ("campaigns", "offers", "campaign_stores", "stores")


def live(engine: Engine) -> LiveCampaigns:
    campaigns = engine.runtime.ingestor.campaigns
    assert campaigns is not None
    return campaigns


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL the engine sends while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa_engine = engine.runtime.engine
    event.listen(sa_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(sa_engine, "before_cursor_execute", record)


def reads_of_campaigns(sql: list[str]) -> list[str]:
    return [
        s
        for s in sql
        if s.lstrip().upper().startswith("SELECT")
        and any(f"FROM {t}" in s or f"JOIN {t}" in s for t in CATALOGUE_TABLES)
    ]


def enters(engine: Engine, shopper: dict[str, Any]) -> list[dict[str, Any]]:
    """The coupons of one walk-in: a fix outside, then one inside the store."""
    engine.ping(shopper, OUTSIDE)
    engine.clock.advance(timedelta(minutes=1))
    coupons = engine.ping(shopper, INSIDE).json()["coupons"]
    engine.clock.advance(timedelta(minutes=1))
    return list(coupons)


def test_decisions_read_campaigns_from_sql_once_then_from_memory(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], cap=5, holdout_share=0)
    shoppers = [engine_api.shopper(email=f"s{i}@example.com", customer=f"c{i}") for i in range(4)]
    loads = live(engine_api).loads
    assert len(enters(engine_api, shoppers[0])) == 1  # the first decision reads them

    with statements(engine_api) as sql:
        coupons = [enters(engine_api, s) for s in shoppers[1:]]

    assert [len(c) for c in coupons] == [1, 1, 1]
    assert live(engine_api).loads == loads + 1
    assert reads_of_campaigns(sql) == []


def test_a_paused_campaign_issues_nothing_from_the_next_ping_on(engine_api: Engine) -> None:
    store = engine_api.create_store()
    campaign = engine_api.create_campaign([store["id"]], cap=5, holdout_share=0)
    assert len(enters(engine_api, engine_api.shopper(customer="a", email="a@example.com"))) == 1

    paused = engine_api.client.post(
        f"/v1/manager/campaigns/{campaign['id']}/pause", headers=MANAGER
    )
    assert paused.status_code == 200, paused.text

    assert enters(engine_api, engine_api.shopper(customer="b", email="b@example.com")) == []


def test_a_statement_that_ends_a_campaign_is_seen_by_the_next_decision(
    engine_api: Engine,
) -> None:
    store = engine_api.create_store()
    campaign = engine_api.create_campaign([store["id"]], cap=5, holdout_share=0)
    assert len(enters(engine_api, engine_api.shopper(customer="a", email="a@example.com"))) == 1

    with transaction(engine_api.runtime.sessions) as session:  # as the campaign clock does
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign["id"])
            .values(status="ended")
            .execution_options(synchronize_session=False)
        )

    assert enters(engine_api, engine_api.shopper(customer="b", email="b@example.com")) == []


def test_budget_counters_moving_at_each_issue_do_not_reload_the_campaigns(
    engine_api: Engine,
) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], cap=5, max_coupons=10, holdout_share=0)
    enters(engine_api, engine_api.shopper(customer="a", email="a@example.com"))
    loads = live(engine_api).loads

    issued = [
        enters(engine_api, engine_api.shopper(customer=f"c{i}", email=f"c{i}@example.com"))
        for i in range(3)
    ]

    assert [len(c) for c in issued] == [1, 1, 1]
    assert live(engine_api).loads == loads
    with transaction(engine_api.runtime.sessions) as session:
        assert session.scalar(text("SELECT issued_count FROM campaigns")) == 4


def test_a_change_nobody_announced_is_seen_once_the_copy_is_too_old(engine_api: Engine) -> None:
    store = engine_api.create_store()
    campaign = engine_api.create_campaign([store["id"]], cap=5, holdout_share=0)
    assert len(enters(engine_api, engine_api.shopper(customer="a", email="a@example.com"))) == 1
    # written past the engine's sessions (an operator's SQL): no announcement
    with engine_api.runtime.engine.begin() as connection:
        connection.execute(
            text("UPDATE campaigns SET status = 'paused' WHERE id = :id"), {"id": campaign["id"]}
        )
    live(engine_api).max_age_s = 0.2

    time.sleep(0.3)

    assert enters(engine_api, engine_api.shopper(customer="b", email="b@example.com")) == []


def test_a_campaign_paused_through_one_process_stops_offers_in_another(
    stack: Stack, make_engine_api: EngineFactory
) -> None:
    if stack.name != "postgres-redis":
        pytest.skip("two processes share campaigns through Redis and PostgreSQL only")
    first = make_engine_api()
    second = make_engine_api(publish=False)
    store = first.create_store()
    campaign = first.create_campaign([store["id"]], cap=5, holdout_share=0)
    second.runtime.fences.refresh(force=True)  # the fence index has its own interval
    assert len(enters(second, second.shopper(customer="a", email="a@example.com"))) == 1

    paused = first.client.post(f"/v1/manager/campaigns/{campaign['id']}/pause", headers=MANAGER)
    assert paused.status_code == 200, paused.text

    assert enters(second, second.shopper(customer="b", email="b@example.com")) == []
    resumed = first.client.post(f"/v1/manager/campaigns/{campaign['id']}/resume", headers=MANAGER)
    assert resumed.status_code == 200, resumed.text
    assert len(enters(second, second.shopper(customer="c", email="c@example.com"))) == 1


def test_a_trigger_that_issues_nothing_reads_no_device_row(engine_api: Engine) -> None:
    store = engine_api.create_store()
    engine_api.create_campaign([store["id"]], cap=5, holdout_share=0)
    enters(engine_api, engine_api.shopper(customer="a", email="a@example.com"))  # warm copy
    shopper = engine_api.shopper(customer="b", email="b@example.com", offers_by_email=False)
    engine_api.ping(shopper, OUTSIDE)
    engine_api.clock.advance(timedelta(minutes=1))

    with statements(engine_api) as sql:
        answer = engine_api.ping(shopper, INSIDE).json()

    assert [e["kind"] for e in answer["events"]] == ["enter"] and answer["coupons"] == []
    reads = [s for s in sql if s.lstrip().upper().startswith("SELECT") and "FROM devices" in s]
    assert reads == []
