"""Shared fixtures: the two configurations (SQLite + in-process state, PostgreSQL + Redis), a real
local SMTP server, and an API client over a runtime with a manual clock.

On a developer machine without PostgreSQL or Redis the tests that need them skip with the reason;
under CI (``CI=true``) a missing server is an error, never a skip.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import redis
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from core.clock import ManualClock
from core.db import make_engine
from core.ratelimit import RateLimits, RouteLimits
from core.settings import Environment, Settings

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get(
    "OFFER_ENGINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("OFFER_ENGINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
NO_RATE_LIMITS = RateLimits(
    pings=RouteLimits(), redemptions=RouteLimits(), manager=RouteLimits(), default=RouteLimits()
)


def _unavailable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable ({error}); start it (see README) to run these tests"
    if IN_CI:
        pytest.fail(f"CI needs {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_available() -> str:
    engine = make_engine(POSTGRES_URL, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        _unavailable(f"PostgreSQL at {POSTGRES_URL}", exc)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_available() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {REDIS_URL}", exc)
    finally:
        client.close()
    return REDIS_URL


@dataclass
class Stack:
    """One configuration: a database URL (with its own schema or file) and a hot-state choice."""

    name: str
    database_url: str
    redis_url: str | None
    redis_prefix: str
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": Environment.TEST,
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "redis_key_prefix": self.redis_prefix,
            # Tests drive many requests from one address inside one window of a manual clock;
            # the tests about rate limits set the limits they exercise.
            "rate_limits": NO_RATE_LIMITS,
            # No holdout unless a test asks for one: a test's shopper gets the offer it expects.
            "default_holdout_share": 0.0,
        }
        values.update(overrides)
        return Settings(**values)

    def engine(self) -> Engine:
        return make_engine(self.database_url, **self.engine_kwargs)


def _postgres_schema_url(base: str, schema: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite-inprocess", "postgres-redis"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """Each test using this runs twice: on the embedded default and on PostgreSQL + Redis."""
    if request.param == "sqlite-inprocess":
        yield Stack("sqlite-inprocess", f"sqlite:///{tmp_path / 'engine.db'}", None, "oe:")
        return
    pg_url = request.getfixturevalue("postgres_available")
    redis_url = request.getfixturevalue("redis_available")
    schema = f"t_{secrets.token_hex(6)}"
    admin = make_engine(pg_url, pool_size=1, max_overflow=0)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    prefix = f"test:{schema}:"
    try:
        yield Stack("postgres-redis", _postgres_schema_url(pg_url, schema), redis_url, prefix)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SmtpInbox:
    """A real SMTP server (aiosmtpd) on a free loopback port, collecting what it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[Any] = []
        self._changed = threading.Condition()
        self.refuse_with: str | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_with:
            return self.refuse_with
        with self._changed:
            self.envelopes.append(envelope)
            self.messages.append(message_from_bytes(envelope.content))
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def take(self, match: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        """Wait for the latest message that ``match`` accepts, remove it and return it (the
        shopper read it: counts of what is left stay about the other mail)."""
        found: list[Message] = []

        def arrived() -> bool:
            found[:] = [m for m in self.messages if match(m)]
            return bool(found)

        with self._changed:
            if not self._changed.wait_for(arrived, timeout=timeout):
                raise AssertionError(f"no matching email within {timeout} s")
            index = next(i for i, m in enumerate(self.messages) if m is found[-1])
            del self.messages[index], self.envelopes[index]
            return found[-1]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout=timeout):
                raise AssertionError(
                    f"expected {count} email(s) within {timeout} s, got {len(self.messages)}"
                )
            return list(self.messages)


def text_of(message: Message, subtype: str = "plain") -> str:
    """The decoded ``text/<subtype>`` part of a received email (single part or multipart)."""
    for part in message.walk():
        if part.get_content_type() == f"text/{subtype}":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError(f"no text/{subtype} part in the email")


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpInbox, int]]:
    inbox = SmtpInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)
