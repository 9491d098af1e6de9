"""The ``offer-engine`` command as a user runs it: the demo, and ``serve`` answering HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

CLI = [sys.executable, "-m", "api.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFER_ENGINE_")}
    env.update(extra)
    return env


def test_demo_prints_the_whole_path_and_can_run_again(tmp_path: Path) -> None:
    for _ in range(2):
        done = subprocess.run(
            [*CLI, "demo", "--data-dir", str(tmp_path / "demo")],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(COLUMNS="200"),
            cwd=tmp_path,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        for needle in (
            "enter Kahvila Aukio",
            "coupon ",
            "delivery email: sent",
            "redeemed",
            "409",
            "410",
            "403",
        ):
            assert needle in out, f"{needle!r} missing from demo output:\n{out}"
        assert "in this process only" in done.stderr  # it says hot state is not shared
        # Every coupon was sent under the one lease the demo's scheduler took at the start.
        assert "lease scheduler lost" not in done.stdout + done.stderr
    emails = list((tmp_path / "demo" / "outbox").glob("*.eml"))
    assert len(emails) == 3


def test_serve_answers_health_and_openapi(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--database-url", f"sqlite:///{tmp_path / 's.db'}"],
        env=_env(OFFER_ENGINE_ENVIRONMENT="test"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health is not None, "server did not come up"
        assert health.json() == {"status": "ok", "hot_state": "in-process"}
        spec = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()
        assert "/v1/sdk/pings" in spec["paths"]
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "Application shutdown complete" in output, output  # scheduler and database closed


def test_production_refuses_default_secrets(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(OFFER_ENGINE_ENVIRONMENT="production"),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    assert "OFFER_ENGINE_SECRET_KEY" in done.stdout + done.stderr
