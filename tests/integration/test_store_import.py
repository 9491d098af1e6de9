"""Importing stores from files, on both stacks: the real OpenStreetMap data in ../shared/data (NYC
points as circles, Helsinki polygons), GeoPackage and zipped Shapefile made from it (one in
Finland's projected CRS), and inputs that must be refused."""

from __future__ import annotations

import json
import math
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest
from sqlalchemy import func, select

from api.runtime import Runtime
from core.clock import ManualClock
from geo.feature_files import ImportFileError
from geo.geometry import METRES_PER_DEGREE, PolygonShape
from geo.ingest import ImportOptions, ImportReport, StoreImporter
from geo.models import Fence, Store
from tests.conftest import Stack
from tests.shared_data import shared_data_dir

pytestmark = pytest.mark.integration

DATA = shared_data_dir()
NYC = DATA / "nyc_osm_pois_2017.csv"
HELSINKI = DATA / "helsinki_osm_polygons.geojson"


def real(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} is absent: these tests import the real files in ../shared/data")
    return path


class Importer:
    """The import as the CLI and the endpoint run it, plus a look at what it wrote."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.done_calls = 0
        self.done_seconds = 0.0

    def run(self, path: Path, **options: Any) -> ImportReport:
        def on_done() -> None:
            self.done_calls += 1
            started = time.perf_counter()
            self.runtime.fences.announce_change()
            self.done_seconds += time.perf_counter() - started

        importer = StoreImporter(self.runtime.sessions, self.runtime.clock)
        return importer.run(path, ImportOptions(**options), on_done=on_done)

    def count(self, model: type[Any], *where: Any) -> int:
        with self.runtime.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    def store(self, external_id: str) -> tuple[Store, Fence]:
        with self.runtime.sessions() as session:
            store = session.scalars(select(Store).where(Store.external_id == external_id)).one()
            fence = session.scalars(select(Fence).where(Fence.store_id == store.id)).one()
            return store, fence


@pytest.fixture
def importer(stack: Stack, clock: ManualClock) -> Iterator[Importer]:
    runtime = Runtime.build(stack.settings(run_scheduler=False), clock=clock)
    runtime.start()
    try:
        yield Importer(runtime)
    finally:
        runtime.stop()


def metres_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    dx = (a[0] - b[0]) * math.cos(math.radians(b[1])) * METRES_PER_DEGREE
    return math.hypot(dx, (a[1] - b[1]) * METRES_PER_DEGREE)


def helsinki_slice(rows: int = 40) -> gpd.GeoDataFrame:
    return gpd.read_file(real(HELSINKI), engine="pyogrio").iloc[:rows]


def zip_shapefile(frame: gpd.GeoDataFrame, folder: Path, *, with_prj: bool = True) -> Path:
    folder.mkdir()
    # Shapefile field names stop at 10 characters; admin_level is not needed here
    frame.drop(columns=["admin_level"]).to_file(folder / "stores.shp", engine="pyogrio")
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as out:
        for part in folder.iterdir():
            if with_prj or part.suffix != ".prj":
                out.write(part, part.name)
    return archive


# ---------------------------------------------------------------- the real files


def test_nyc_pois_become_circles_and_a_reimport_changes_nothing(importer: Importer) -> None:
    source = pd.read_csv(real(NYC))
    with_coordinates = int((source.lon.notna() & source.lat.notna()).sum())
    assert len(source) == 16_936  # the file the data notes describe

    started = time.perf_counter()
    first = importer.run(NYC)
    took = time.perf_counter() - started
    print(
        f"\nNYC import of {len(source)} rows: {took:.1f} s, of which fence index rebuild "
        f"{importer.done_seconds:.1f} s"
    )

    assert (first.total_rows, first.created, first.rejected) == (len(source), with_coordinates, [])
    assert importer.count(Store) == source.osm_id.nunique() == with_coordinates
    assert importer.count(Fence, Fence.kind == "circle", Fence.radius_m == 50.0) == with_coordinates
    pier, fence = importer.store("166878947")
    assert pier.name == "Pier 11/Wall Street Terminal" and pier.timezone == "UTC"
    assert (fence.lon, fence.lat) == (-74.0055003, 40.7024303)
    assert importer.store("103266323")[0].name == "fast_food 103266323"  # blank name in the file

    started = time.perf_counter()
    again = importer.run(NYC)
    print(f"NYC re-import: {time.perf_counter() - started:.1f} s")
    assert (again.created, again.updated, again.unchanged) == (0, 0, with_coordinates)
    assert importer.done_calls == 1  # nothing changed, so no index rebuild was announced


def test_helsinki_polygons_are_imported_by_osm_reference(
    importer: Importer, tmp_path: Path
) -> None:
    source = gpd.read_file(real(HELSINKI), engine="pyogrio")
    started = time.perf_counter()
    report = importer.run(HELSINKI)
    print(f"\nHelsinki import of {len(source)} polygons: {time.perf_counter() - started:.2f} s")

    assert report.total_rows == len(source) == 521
    assert report.created + len(report.rejected) == 521
    assert all(reason for _, reason in report.rejected)
    assert importer.count(Fence, Fence.kind == "polygon") == report.created
    ateneum, fence = importer.store("way/8033120")
    assert ateneum.name == "Ateneum" and fence.kind == "polygon" and fence.geojson is not None
    original = source[source.name == "Ateneum"].geometry.iloc[0]
    assert fence.geojson["type"] == original.geom_type == "MultiPolygon"
    assert importer.store("relation/6066")[0].name == "Kansallisarkisto"  # not from a way
    unnamed = source[(source.name == "") & (source.kind == "building")].iloc[0]
    assert importer.store(f"way/{unnamed.osm_id}")[0].name == f"building way/{unnamed.osm_id}"

    again = importer.run(HELSINKI)
    assert (again.created, again.updated, again.unchanged) == (0, 0, report.created)

    features = json.loads(HELSINKI.read_text(encoding="utf-8"))
    features["features"][1]["properties"]["name"] = "Ateneum Art Museum"
    changed = tmp_path / "helsinki_changed.geojson"
    changed.write_text(json.dumps(features), encoding="utf-8")
    third = importer.run(changed)
    assert (third.created, third.updated, third.unchanged) == (0, 1, report.created - 1)
    renamed, same_fence = importer.store("way/8033120")
    assert renamed.name == "Ateneum Art Museum" and same_fence.version == fence.version


def test_a_moved_point_is_one_update_and_bumps_its_fence(
    importer: Importer, tmp_path: Path
) -> None:
    rows = pd.read_csv(real(NYC), dtype=str, keep_default_na=False).iloc[:300]
    original = tmp_path / "nyc.csv"
    rows.to_csv(original, index=False)
    assert importer.run(original).created == 300
    moved = rows.copy()
    moved.loc[7, "lat"] = str(float(moved.loc[7, "lat"]) + 0.001)
    changed = tmp_path / "nyc_moved.csv"
    moved.to_csv(changed, index=False)

    report = importer.run(changed)

    assert (report.created, report.updated, report.unchanged) == (0, 1, 299)
    _, fence = importer.store(str(rows.loc[7, "osm_id"]))
    assert fence.lat == pytest.approx(float(rows.loc[7, "lat"]) + 0.001) and fence.version == 2


# ---------------------------------------------------------------- other formats, other CRSs


def test_geopackage_in_a_projected_crs_is_reprojected(importer: Importer, tmp_path: Path) -> None:
    wgs84 = helsinki_slice()
    package = tmp_path / "helsinki.gpkg"
    wgs84.to_crs(3067).to_file(package, layer="stores", engine="pyogrio")  # ETRS-TM35FIN, metres

    report = importer.run(package)

    assert (report.format, report.source_crs, report.layer) == ("GeoPackage", "EPSG:3067", "stores")
    assert report.created + len(report.rejected) == len(wgs84) and report.created > 0
    for feature in wgs84.itertuples():
        if (feature.name or "").strip():
            _, fence = importer.store(
                f"way/{feature.osm_id}" if feature.from_way else f"relation/{feature.osm_id}"
            )
            expected = PolygonShape(
                json.loads(gpd.GeoSeries([feature.geometry]).to_json())["features"][0]["geometry"]
            ).anchor
            assert metres_between((fence.lon, fence.lat), expected) < 1.0


def test_zipped_shapefile_and_a_chosen_layer(importer: Importer, tmp_path: Path) -> None:
    wgs84 = helsinki_slice(30)
    archive = zip_shapefile(wgs84.to_crs(3857), tmp_path / "stores")
    report = importer.run(archive)
    assert (report.format, report.source_crs) == ("zipped Shapefile", "EPSG:3857")
    assert report.created == 30 - len(report.rejected) and report.created > 0
    _, fence = importer.store("way/8033120")
    ateneum = wgs84[wgs84.osm_id == 8033120].geometry.iloc[0].centroid
    assert metres_between((fence.lon, fence.lat), (ateneum.x, ateneum.y)) < 1.0

    package = tmp_path / "two.gpkg"
    wgs84.iloc[:5].to_file(package, layer="first", engine="pyogrio")
    wgs84.iloc[5:8].to_file(package, layer="second", engine="pyogrio")
    with pytest.raises(ImportFileError, match="2 layers with geometry") as refused:
        importer.run(package)
    assert refused.value.code == "layer_required"
    chosen = importer.run(package, layer="second")
    assert (chosen.layer, chosen.total_rows, chosen.imported, chosen.created) == ("second", 3, 3, 0)


def test_a_shapefile_without_crs_is_taken_as_lon_lat_and_the_report_says_so(
    importer: Importer, tmp_path: Path
) -> None:
    archive = zip_shapefile(helsinki_slice(5), tmp_path / "bare", with_prj=False)
    report = importer.run(archive)
    assert report.created == 5
    assert "assumed" in report.source_crs
    assert any("declares no CRS" in note for note in report.notes)


def test_a_csv_in_another_crs_with_radius_column(importer: Importer, tmp_path: Path) -> None:
    points = gpd.GeoSeries.from_xy([24.9414, 24.9384], [60.1699, 60.1719], crs=4326).to_crs(3067)
    csv = tmp_path / "tm35.csv"
    csv.write_text(
        "id,name,x,y,radius_m\n"
        f"a,Kahvila,{points.x[0]},{points.y[0]},80\n"
        f"b,,{points.x[1]},{points.y[1]},\n",
        encoding="utf-8",
    )
    report = importer.run(csv, crs="EPSG:3067", radius_m=30, timezone="Europe/Helsinki")
    assert (report.created, report.rejected, report.source_crs) == (2, [], "EPSG:3067")
    kahvila, circle = importer.store("a")
    assert (kahvila.timezone, circle.radius_m) == ("Europe/Helsinki", 80)
    assert metres_between((circle.lon, circle.lat), (24.9414, 60.1699)) < 1.0
    unnamed, default_radius = importer.store("b")
    assert (unnamed.name, default_radius.radius_m) == ("store b", 30)


# ---------------------------------------------------------------- refusals


def test_rows_that_cannot_be_stores_are_rejected_with_reasons(
    importer: Importer, tmp_path: Path
) -> None:
    square = [[[24.94, 60.17], [24.941, 60.17], [24.941, 60.171], [24.94, 60.171], [24.94, 60.17]]]
    bowtie = [[[24.94, 60.17], [24.941, 60.171], [24.941, 60.17], [24.94, 60.171], [24.94, 60.17]]]
    features = [
        ({"id": "ok", "name": "Square"}, {"type": "Polygon", "coordinates": square}),
        ({"id": "line", "name": "Road"}, {"type": "LineString", "coordinates": square[0][:2]}),
        ({"id": None, "name": "No id"}, {"type": "Point", "coordinates": [24.94, 60.17]}),
        ({"id": "nothing", "name": "No geometry"}, None),
        ({"id": "bowtie", "name": "Bow tie"}, {"type": "Polygon", "coordinates": bowtie}),
        ({"id": "ok", "name": "Square again"}, {"type": "Point", "coordinates": [24.9, 60.1]}),
        ({"id": "far", "name": "Off the map"}, {"type": "Point", "coordinates": [24.9, 95.0]}),
    ]
    path = tmp_path / "mixed.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": p, "geometry": g} for p, g in features
                ],
            }
        )
    )

    report = importer.run(path)

    assert (report.created, report.total_rows) == (1, 7)
    reasons = dict(report.rejected)
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7]
    assert "LineString is not a fence" in reasons[2]
    assert "no external id" in reasons[3]
    assert reasons[4] == "no geometry"
    assert "invalid" in reasons[5] and "Self-intersection" in reasons[5]
    assert "already used by row 1" in reasons[6]
    assert "latitude" in reasons[7]
    assert importer.count(Store) == 1


def test_a_csv_row_without_coordinates_is_rejected(importer: Importer, tmp_path: Path) -> None:
    csv = tmp_path / "gaps.csv"
    csv.write_text("osm_id,name,longitude,latitude\n1,A,24.94,60.17\n2,B,,60.17\n3,C,east,60.1\n")
    report = importer.run(csv)
    assert report.created == 1
    assert [row for row, _ in report.rejected] == [2, 3]
    assert "missing or not numbers" in report.rejected[1][1]


@pytest.mark.parametrize(
    ("name", "content", "code", "message"),
    [
        (
            "no_coords.csv",
            "id,name,city\n1,A,Helsinki\n",
            "no_coordinates",
            "no coordinate columns",
        ),
        ("no_ids.csv", "name,lon,lat\nA,24.9,60.1\n", "no_id_column", "no external id column"),
        ("stores.xlsx", "not a spreadsheet", "unsupported_format", "unsupported file type"),
        ("garbage.geojson", "this is not GeoJSON", "unreadable_file", "cannot read the file"),
        ("missing.csv", None, "file_not_found", "file not found"),
    ],
)
def test_files_that_cannot_be_imported_are_refused_whole(
    importer: Importer, tmp_path: Path, name: str, content: str | None, code: str, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ImportFileError, match=message) as refused:
        importer.run(path)
    assert refused.value.code == code
    assert importer.count(Store) == 0 and importer.done_calls == 0
