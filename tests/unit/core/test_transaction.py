"""``core.db.transaction``: one unit of work, its commit and its hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Integer, String, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from core.db import after_transaction, make_engine, make_session_factory, on_commit, transaction


class _Base(DeclarativeBase):
    pass


class Note(_Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(String(20))


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    _Base.metadata.create_all(engine)
    return engine


def _commits(engine: Engine) -> list[int]:
    """Commits reaching the database."""
    found: list[int] = []

    def commit(_conn: Any) -> None:
        found.append(1)

    event.listen(engine, "commit", commit)
    return found


def _session_commits(factory: sessionmaker[Session]) -> list[int]:
    """Commits of the session itself, with or without a database transaction under them."""
    found: list[int] = []

    def commit(_session: Session) -> None:
        found.append(1)

    event.listen(factory, "after_commit", commit)
    return found


def test_a_write_is_committed_and_its_hooks_run_in_order(engine: Engine) -> None:
    commits, ran = _commits(engine), []
    with transaction(make_session_factory(engine)) as session:
        session.add(Note(text="kept"))
        on_commit(session, lambda: ran.append("on_commit"))
        after_transaction(session, lambda: ran.append("after"))
    assert commits == [1]
    assert ran == ["on_commit", "after"]
    with make_session_factory(engine)() as session:
        assert session.scalars(select(Note.text)).all() == ["kept"]


def test_a_unit_that_began_nothing_commits_nothing(engine: Engine) -> None:
    """Nothing queried, nothing added: no commit, not even the session's own (it costs more
    than the rest of such a unit); the hooks still run."""
    factory = make_session_factory(engine)
    commits, session_commits, ran = _commits(engine), _session_commits(factory), []
    with transaction(factory) as session:
        on_commit(session, lambda: ran.append("on_commit"))
        after_transaction(session, lambda: ran.append("after"))
    assert (commits, session_commits) == ([], [])
    assert ran == ["on_commit", "after"]
    with transaction(factory) as session:
        session.add(Note(text="kept"))
    assert (commits, session_commits) == ([1], [1])


def test_an_error_rolls_back_and_runs_only_the_after_hooks(engine: Engine) -> None:
    ran: list[str] = []
    with pytest.raises(RuntimeError), transaction(make_session_factory(engine)) as session:
        session.add(Note(text="lost"))
        session.flush()
        on_commit(session, lambda: ran.append("on_commit"))
        after_transaction(session, lambda: ran.append("after"))
        raise RuntimeError("the unit failed")
    assert ran == ["after"]
    with make_session_factory(engine)() as session:
        assert session.scalars(select(Note)).all() == []
