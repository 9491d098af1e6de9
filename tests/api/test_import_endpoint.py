"""POST /v1/manager/stores/import over HTTP, on both stacks: a multipart upload, its report, and
the refusals (no key, an unreadable or unknown file, an oversized one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import Point
from sqlalchemy import update

from api.routes.imports import MAX_UPLOAD_BYTES
from geo.models import Fence, Store
from tests.api.conftest import MANAGER, SDK_KEY, Engine

pytestmark = pytest.mark.integration

URL = "/v1/manager/stores/import"
SQUARE = [[[24.94, 60.17], [24.941, 60.17], [24.941, 60.1705], [24.94, 60.1705], [24.94, 60.17]]]


def geojson_file(folder: Path) -> Path:
    features: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            {"external_id": "hel-1", "name": "Kauppatori Kiosk"},
            {"type": "Polygon", "coordinates": SQUARE},
        ),
        (
            {"external_id": "hel-2", "name": "Esplanadi Cafe", "radius_m": 35},
            {"type": "Point", "coordinates": [24.9497, 60.1675]},
        ),
        (
            {"external_id": "hel-3", "name": "Tram line"},
            {"type": "LineString", "coordinates": [[24.94, 60.17], [24.95, 60.17]]},
        ),
    ]
    path = folder / "helsinki stores.geojson"
    collection = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": p, "geometry": g} for p, g in features],
    }
    path.write_text(json.dumps(collection), encoding="utf-8")
    return path


def upload(engine: Engine, path: Path, headers: dict[str, str] = MANAGER, **params: Any) -> Any:
    with path.open("rb") as handle:
        return engine.client.post(
            URL, headers=headers, params=params, files={"file": (path.name, handle)}
        )


def test_upload_imports_stores_and_a_second_upload_changes_nothing(
    engine_api: Engine, tmp_path: Path
) -> None:
    path = geojson_file(tmp_path)

    first = upload(engine_api, path, timezone="Europe/Helsinki")

    assert first.status_code == 201, first.text
    report = first.json()
    assert report["file"] == "helsinki stores.geojson" and report["format"] == "GeoJSON"
    assert (report["total_rows"], report["created"], report["rejected_count"]) == (3, 2, 1)
    assert report["rejected"][0]["row"] == 3
    assert "LineString is not a fence" in report["rejected"][0]["reason"]
    assert engine_api.count(Store, Store.timezone == "Europe/Helsinki") == 2
    assert engine_api.count(Fence, Fence.kind == "polygon") == 1
    assert engine_api.count(Fence, Fence.kind == "circle", Fence.radius_m == 35) == 1

    again = upload(engine_api, path, timezone="Europe/Helsinki")
    assert again.status_code == 200, again.text
    assert (again.json()["created"], again.json()["unchanged"]) == (0, 2)
    assert engine_api.count(Store) == 2


def test_import_needs_the_manager_key(engine_api: Engine, tmp_path: Path) -> None:
    path = geojson_file(tmp_path)
    for headers in ({}, SDK_KEY):
        refused = upload(engine_api, path, headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unauthenticated"
    assert engine_api.count(Store) == 0


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("stores.geojson", b"\x00\x01 definitely not GeoJSON", "unreadable_file"),
        ("stores.zip", b"PK not really a zip", "unreadable_file"),
        ("stores.txt", b"lon,lat\n24.9,60.1\n", "unsupported_format"),
        ("stores.csv", b"id,name\n1,No coordinates\n", "no_coordinates"),
        ("stores.csv", b"", "empty_file"),
    ],
)
def test_unusable_uploads_are_422_with_a_clear_message(
    engine_api: Engine, name: str, content: bytes, code: str
) -> None:
    refused = engine_api.client.post(URL, headers=MANAGER, files={"file": (name, content)})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == code and error["message"]
    assert engine_api.count(Store) == 0


def test_a_bad_option_is_422(engine_api: Engine, tmp_path: Path) -> None:
    refused = upload(engine_api, geojson_file(tmp_path), timezone="Mars/Olympus_Mons")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_timezone"


def test_a_file_over_the_limit_is_413(engine_api: Engine) -> None:
    oversized = b" " * (MAX_UPLOAD_BYTES + 1)
    refused = engine_api.client.post(
        URL, headers=MANAGER, files={"file": ("big.geojson", oversized)}
    )
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "payload_too_large"


def test_a_geopackage_layer_without_geometry_is_422(engine_api: Engine, tmp_path: Path) -> None:
    """A table with no geometry column, alone in the file or chosen by name."""
    alone, mixed = tmp_path / "notes.gpkg", tmp_path / "stores.gpkg"
    pyogrio.write_dataframe(pd.DataFrame({"id": ["x"], "name": ["n"]}), alone, layer="notes")
    stores = {"id": ["1"], "name": ["A"]}
    gpd.GeoDataFrame(stores, geometry=[Point(24.9, 60.1)], crs=4326).to_file(mixed, layer="stores")
    pyogrio.write_dataframe(pd.DataFrame({"id": ["x"], "note": ["n"]}), mixed, layer="notes")

    for refused in (upload(engine_api, alone), upload(engine_api, mixed, layer="notes")):
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "no_geometry" and "geometry" in error["message"]
    assert engine_api.count(Store) == 0


def test_a_row_with_a_control_character_is_rejected_and_the_others_imported(
    engine_api: Engine,
) -> None:
    """PostgreSQL text cannot hold NUL: such a row is reported, it does not fail the file."""
    data = (
        b"id,name,lon,lat\n1,Kiosk,24.95,60.17\n2,Bad\x00Name,24.951,60.17\n3,Cafe,24.952,60.17\n"
    )

    answer = engine_api.client.post(URL, headers=MANAGER, files={"file": ("stores.csv", data)})

    assert answer.status_code == 201, answer.text
    report = answer.json()
    assert (report["created"], report["rejected_count"]) == (2, 1)
    assert report["rejected"][0]["row"] == 2
    assert "control character" in report["rejected"][0]["reason"]
    assert engine_api.count(Store) == 2


def test_a_reimport_keeps_the_hours_and_dwell_a_manager_set(engine_api: Engine) -> None:
    """The file has no hours or dwell column: the values a manager set since the first import
    stay, and the second upload of the same file changes nothing."""
    data = b"id,name,lon,lat\n1,Corner,24.9414,60.1699\n"
    first = engine_api.client.post(URL, headers=MANAGER, files={"file": ("s.csv", data)})
    assert first.status_code == 201, first.text
    [store] = engine_api.client.get("/v1/manager/stores", headers=MANAGER).json()["items"]
    hours = {"mon": [["08:00", "20:00"]]}
    patched = engine_api.client.patch(
        f"/v1/manager/stores/{store['id']}", headers=MANAGER, json={"opening_hours": hours}
    )
    assert patched.status_code == 200, patched.text
    with engine_api.runtime.sessions.begin() as session:
        session.execute(update(Fence).where(Fence.store_id == store["id"]).values(dwell_s=300))

    again = engine_api.client.post(URL, headers=MANAGER, files={"file": ("s.csv", data)})

    assert again.status_code == 200, again.text  # nothing created
    assert (again.json()["updated"], again.json()["unchanged"]) == (0, 1)
    [after] = engine_api.client.get("/v1/manager/stores", headers=MANAGER).json()["items"]
    assert after["opening_hours"] == hours
    assert [f["dwell_s"] for f in after["fences"]] == [300]
