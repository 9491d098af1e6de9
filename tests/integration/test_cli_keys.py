"""``offer-engine keys`` as an operator runs it: the key is printed once, lists never show it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.apikeys import ApiKeyVerifier, split_key
from core.clock import SystemClock
from core.db import make_engine, make_session_factory
from core.state import InProcessHotState

CLI = [sys.executable, "-m", "api.cli", "keys"]


def _run(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFER_ENGINE_")}
    env.update(OFFER_ENGINE_ENVIRONMENT="test", OFFER_ENGINE_DATABASE_URL=f"sqlite:///{db}")
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def _verifier(db: Path) -> ApiKeyVerifier:
    engine = make_engine(f"sqlite:///{db}")
    return ApiKeyVerifier(make_session_factory(engine), InProcessHotState(), SystemClock())


def test_create_list_rotate_revoke(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    made = _run(db, "create", "pos", "--label", "till 3", "--store", "st-1", "--store", "st-2")
    assert made.returncode == 0, made.stderr
    header, key = made.stdout.strip().splitlines()
    assert "pos key" in header and "st-1, st-2" in header and "till 3" in header
    assert "cannot be shown again" in made.stderr
    record = _verifier(db).verify(key)
    assert record is not None and record.stores == ("st-1", "st-2")

    listed = _run(db, "list")
    assert listed.returncode == 0, listed.stderr
    assert record.id in listed.stdout and "active" in listed.stdout
    parts = split_key(key)
    assert parts is not None and parts[1] not in listed.stdout

    rotated = _run(db, "rotate", record.id, "--overlap-s", "3600")
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert _verifier(db).verify(key) is not None, "the old key lives through the overlap"
    assert _verifier(db).verify(new_key) is not None

    revoked = _run(db, "revoke", record.id)
    assert revoked.returncode == 0 and "revoked pos key" in revoked.stdout
    assert _verifier(db).verify(key) is None
    assert "revoked" in _run(db, "list").stdout

    missing = _run(db, "revoke", "nosuchkey")
    assert missing.returncode == 2 and "no API key" in missing.stderr
    bad_role = _run(db, "create", "root")
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr
