"""``offer-engine consent export`` and ``consent verify`` as an operator runs them: exit 0 with a
summary for an intact export or database, exit 1 naming the first bad record for a tampered one."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from api.cli import app
from consent.crypto import CheckpointSigner, EvidenceSealer
from consent.domain import Channel, CollectionMethod, ConsentStatus, Purpose
from consent.ledger import ConsentLedger, LedgerConfig
from consent.service import NoticeRegistry
from core.db import make_engine, make_session_factory, transaction, upgrade_database
from core.settings import INSECURE_SECRET

CLI = [sys.executable, "-m", "api.cli", "consent"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFER_ENGINE_")}
    env["OFFER_ENGINE_ENVIRONMENT"] = "test"
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False
    )


def _ledger(url: str) -> None:
    engine = make_engine(url)
    upgrade_database(engine)
    sessions = make_session_factory(engine)
    config = LedgerConfig(
        EvidenceSealer(INSECURE_SECRET), CheckpointSigner(INSECURE_SECRET), checkpoint_every=4
    )
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    with transaction(sessions) as session:
        NoticeRegistry(session).publish(
            purpose=Purpose.MARKETING_OFFERS, version="n-1", language="en", text="Offers.", now=now
        )
        ledger = ConsentLedger(session, config)
        for i in range(10):
            at = now + timedelta(minutes=i)
            ledger.record(
                subject_id=f"sub_{i % 3}",
                purpose=Purpose.MARKETING_OFFERS,
                channel=Channel.EMAIL,
                status=ConsentStatus.GIVEN if i % 2 else ConsentStatus.WITHDRAWN,
                notice_version="n-1",
                method=CollectionMethod.SDK,
                evidence={"ip": "192.0.2.7"},
                occurred_at=at,
                now=at,
            )
    engine.dispose()


def test_export_then_verify_exits_zero_and_a_tampered_copy_exits_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _ledger(url)
    export = tmp_path / "ledger.ndjson"
    done = _run("export", "--out", str(export), "--database-url", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "exported entries 1..10" in done.stderr

    intact = _run("verify", str(export), cwd=tmp_path)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert intact.stdout.startswith("OK: 10 entries (ids 1..10)")

    lines = export.read_text().splitlines(keepends=True)
    third = next(i for i, line in enumerate(lines) if '"id":3,' in line)
    lines[third] = lines[third].replace('"channel":"email"', '"channel":"push"')
    tampered = tmp_path / "tampered.ndjson"
    tampered.write_text("".join(lines))
    broken = _run("verify", str(tampered), cwd=tmp_path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert broken.stdout.startswith("FAILED edited entry 3"), broken.stdout


def test_verify_reads_a_database_directly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _ledger(url)
    runner = CliRunner()
    intact = runner.invoke(app, ["consent", "verify", "--database-url", url])
    assert intact.exit_code == 0, intact.output
    assert "hash chain intact" in intact.output
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM consent_events WHERE id = 6"))
    engine.dispose()
    broken = runner.invoke(app, ["consent", "verify", "--database-url", url])
    assert broken.exit_code == 1
    assert broken.output.startswith("FAILED deleted entry 6"), broken.output
