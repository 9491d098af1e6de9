"""``offer-engine bench geo`` on a small data set: it runs end to end and prints its RESULT line
in the form the issue gives (the figures themselves are measured by hand, not judged here)."""

from __future__ import annotations

import re

from api.bench.geo import run_geo_bench


def test_the_geo_bench_runs_and_prints_its_result_line() -> None:
    said: list[str] = []

    result = run_geo_bench(fences=500, pings=3_000, database_url=None, repeat=2, say=said.append)

    line = result.result_line()
    assert re.fullmatch(
        r"RESULT engine_pings_per_s=\d+ strtree_pings_per_s=\d+ "
        r"postgis_pings_per_s=skipped predict_overhead=-?\d+\.\d{3}",
        line,
    ), line
    assert result.transitions > 0
    assert result.postgis_note == "skipped: the database URL is not PostgreSQL"
    assert any(s.startswith("engine with prediction:") for s in said)
