"""A server worker's app freezes its startup heap out of the cyclic collector's reach; an app
built for a test does not (it shares its process with others)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import gc, sys
from fastapi.testclient import TestClient
from api.app import create_app
from core.settings import Settings
settings = Settings(database_url=sys.argv[1], environment="test")
with TestClient(create_app(settings, server_process=sys.argv[2] == "server")) as client:
    assert client.get("/health").status_code == 200
    print(gc.get_freeze_count())
"""


@pytest.mark.parametrize(("mode", "frozen"), [("server", True), ("shared", False)])
def test_only_a_server_process_freezes_its_startup_heap(
    tmp_path: Path, mode: str, frozen: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'engine.db'}"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, url, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    count = int(done.stdout.strip().splitlines()[-1])
    assert (count > 10_000) is frozen, count
