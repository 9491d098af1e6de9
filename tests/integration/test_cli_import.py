"""``offer-engine stores import FILE`` as a user runs it: a report, a second run that changes
nothing, and a clear refusal (non-zero exit) for a file it cannot read."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "api.cli", "stores", "import"]
ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFER_ENGINE_")}
    env.update(OFFER_ENGINE_ENVIRONMENT="test", COLUMNS="200", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [*CLI, *args, "--database-url", f"sqlite:///{tmp_path / 'cli.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def test_import_prints_a_report_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    csv = tmp_path / "stores.csv"
    csv.write_text(
        "osm_id,name,fclass,longitude,latitude,radius_m\n"
        "101,Kahvila Aukio,cafe,24.9414,60.1699,40\n"
        "102,,pharmacy,24.9384,60.1719,\n"
        ",No id,cafe,24.95,60.17,\n"
        "104,Nowhere,cafe,,60.17,\n",
        encoding="utf-8",
    )

    first = run(tmp_path, str(csv), "--radius", "25", "--timezone", "Europe/Helsinki")

    assert first.returncode == 0, first.stdout + first.stderr
    assert "imported 2 of 4 rows" in first.stdout
    assert "created 2, updated 0, unchanged 0, rejected 2" in first.stdout
    assert "row 3: no external id" in first.stdout
    assert "row 4: longitude/latitude missing or not numbers" in first.stdout
    assert "4/4" in first.stderr  # the progress bar reached the end
    with sqlite3.connect(tmp_path / "cli.db") as db:
        rows = db.execute(
            "SELECT s.external_id, s.name, s.timezone, f.radius_m FROM stores s "
            "JOIN fences f ON f.store_id = s.id ORDER BY s.external_id"
        ).fetchall()
    assert rows == [
        ("101", "Kahvila Aukio", "Europe/Helsinki", 40.0),
        ("102", "pharmacy 102", "Europe/Helsinki", 25.0),
    ]

    second = run(tmp_path, str(csv), "--radius", "25", "--timezone", "Europe/Helsinki")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "created 0, updated 0, unchanged 2, rejected 2" in second.stdout


def test_unreadable_or_unknown_files_exit_non_zero_with_a_message(tmp_path: Path) -> None:
    garbage = tmp_path / "stores.geojson"
    garbage.write_text("not GeoJSON at all")
    sheet = tmp_path / "stores.xlsx"
    sheet.write_text("not a spreadsheet")
    for path, message in (
        (garbage, "cannot read the file as GeoJSON"),
        (sheet, "unsupported file type '.xlsx'"),
        (tmp_path / "absent.csv", "file not found"),
    ):
        done = run(tmp_path, str(path))
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"error: {message}" in done.stderr
        assert "Traceback" not in done.stderr
