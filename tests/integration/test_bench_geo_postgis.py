"""``offer-engine bench geo`` against the real PostgreSQL server with PostGIS: the PostGIS join
runs, and it finds the same (ping, fence) pairs as the bare tree for the same pings, so the two
rates the bench prints answer the same question."""

from __future__ import annotations

import re

import pytest

from api.bench.geo import run_geo_bench
from tests.conftest import IN_CI


def test_postgis_finds_the_pairs_the_tree_finds(postgres_available: str) -> None:
    result = run_geo_bench(
        fences=2_000,
        pings=6_000,
        database_url=postgres_available,
        postgis_sample=6_000,
        repeat=1,
        say=lambda _line: None,
    )
    if result.postgis_pings_per_s is None:
        message = f"PostGIS: {result.postgis_note} (Debian: postgresql-15-postgis-3)"
        if IN_CI:
            pytest.fail(f"CI needs {message}")
        pytest.skip(message)
    assert result.postgis_pings_per_s > 0
    assert result.strtree_pairs is not None and result.strtree_pairs > 100, result.postgis_note
    assert result.postgis_pairs == result.strtree_pairs, result.postgis_note
    assert re.search(r"postgis_pings_per_s=\d+ ", result.result_line())
