"""Batch generation without Ray: items from OGR files and CSV, bad rows, in-process runs into
COGs + a STAC collection, idempotent reruns, the Ray address check, the scaling model.
The Ray runs are in test_batch_ray.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import CRS, Transformer
from rio_cogeo.cogeo import cog_validate

from engine.batch.items import item_seed, read_items
from engine.batch.run import BatchOptions, run_batch
from engine.batch.tasks import FINGERPRINT_TAG, Settings
from engine.batch.workers import ClusterError, InProcess, ModelSpec, make_workers

UTM = "EPSG:32632"


def write_csv(path, rows):
    lines = ["id,prompt,bbox,crs,level,seed,variations"]
    lines += [",".join(f'"{v}"' if "," in str(v) else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_vector(path, geoms, fields: dict, crs: str | None, driver="GPKG"):
    wkb = np.array([shapely.to_wkb(g) if g is not None else None for g in geoms], dtype=object)
    names = list(fields)
    values = [np.array(fields[n], dtype=object) for n in names]
    with warnings.catch_warnings():  # a layer without a CRS, on purpose
        warnings.simplefilter("ignore", UserWarning)
        pyogrio.raw.write(path, wkb, values, names, driver=driver, geometry_type="Unknown",
                          crs=crs)
    return path


def test_polygons_give_their_bounding_boxes_in_the_layers_crs(tmp_path):
    polygon = shapely.Polygon([(447000, 5411000), (447090, 5411010), (447050, 5411070)])
    multi = shapely.MultiPolygon([shapely.box(447200, 5411000, 447230, 5411030),
                                  shapely.box(447300, 5411050, 447320, 5411090)])
    path = write_vector(tmp_path / "items.gpkg", [polygon, multi],
                        {"id": ["a", "b"], "prompt": ["farmland", "forest"],
                         "level": [17, None], "resolution": [None, 0.6]}, UTM)
    items, problems = read_items(path)
    assert problems == []
    assert [i.id for i in items] == ["a", "b"]
    assert items[0].bbox == (447000, 5411000, 447090, 5411070)
    assert items[1].bbox == (447200, 5411000, 447320, 5411090)
    assert CRS.from_user_input(items[0].crs).equals(CRS.from_epsg(32632))
    assert (items[0].level, items[0].resolution) == (17, None)
    assert (items[1].level, items[1].resolution) == (None, 0.6)


def test_bad_rows_get_one_line_each_and_the_others_go_on(tmp_path):
    good = shapely.box(447000, 5411000, 447060, 5411060)
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # self-intersecting
    path = write_vector(
        tmp_path / "items.geojson",
        [good, good, shapely.Polygon(), bowtie, good, good, shapely.Point(447000, 5411000)],
        {"id": ["ok", "noprompt", "empty", "bowtie", "dup", "dup", "point"],
         "prompt": ["farmland", None, "x", "x", "x", "y", "x"]}, UTM, driver="GeoJSON")
    items, problems = read_items(path)
    assert [i.id for i in items] == ["ok"]
    by_id = {p.id: p.message for p in problems}
    assert set(by_id) == {"noprompt", "empty", "bowtie", "dup", "point"}
    assert "prompt" in by_id["noprompt"]
    assert "empty" in by_id["empty"]
    assert "invalid" in by_id["bowtie"] and "Self-intersection" in by_id["bowtie"]
    assert "unique" in by_id["dup"]
    assert "not a polygon" in by_id["point"]
    assert all("\n" not in m for m in by_id.values())


def test_csv_rows_unknown_crs_and_a_layer_without_crs(tmp_path):
    path = write_csv(tmp_path / "items.csv", [
        ("a", "farmland", "447000,5411000,447060,5411060", UTM, 17, 4, 1),
        ("b", "forest", "1,2,3", UTM, 17, "", 1),
        ("c", "forest", "447000,5411000,447060,5411060", "EPSG:999999", 17, "", 1),
        ("d", "forest", "447060,5411000,447000,5411060", UTM, 17, "", 1),
        ("e", "forest", "447000,5411000,447060,5411060", UTM, 17, "", 3),
    ])
    items, problems = read_items(path)
    assert [i.id for i in items] == ["a", "e"]
    assert items[0].seed == 4 and item_seed(items[0]) == 4
    assert items[1].variations == 3 and items[1].seed is None
    assert item_seed(items[1]) == item_seed(items[1])  # from the id: every run agrees
    messages = {p.id: p.message for p in problems}
    assert "XMIN,YMIN,XMAX,YMAX" in messages["b"]
    assert "unknown CRS" in messages["c"] and "EPSG:999999" in messages["c"]
    assert "inverted" in messages["d"] and "swap them" in messages["d"]  # said what is wrong
    nocrs = write_vector(tmp_path / "nocrs.geojson", [shapely.box(0, 0, 1, 1)],
                         {"prompt": ["x"]}, None, driver="GeoJSON")
    # GeoJSON without a CRS is lon/lat by the spec; a shapefile without .prj has none
    shp = write_vector(tmp_path / "nocrs.shp", [shapely.box(0, 0, 1, 1)], {"prompt": ["x"]},
                       None, driver="ESRI Shapefile")
    assert [i.crs for i in read_items(nocrs)[0]] == ["EPSG:4326"]
    items, problems = read_items(shp)
    assert items == [] and "no CRS" in problems[0].message


@pytest.fixture(scope="module")
def settings(tiny_t2i):
    return Settings(model=str(tiny_t2i), precision="fp32", steps=2, tile=256, overlap=64)


@pytest.fixture(scope="module")
def three_items(tmp_path_factory):
    folder = tmp_path_factory.mktemp("items")
    return write_csv(folder / "items.csv", [
        ("farm", "farmland", "447000,5411000,447060,5411060", UTM, 17, 1, 1),
        ("wood", "a forest", "447100,5411000,447150,5411040", UTM, 17, 2, 1),
        ("town", "dense city", "10.3,48.8,10.3006,48.8004", "EPSG:4326", 17, 3, 1),
        ("nope", "", "447000,5411000,447060,5411060", UTM, 17, 1, 1),
    ])


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, three_items, settings, t2i_model):
    out = tmp_path_factory.mktemp("batch") / "out"
    options = BatchOptions(three_items, out, settings, ModelSpec(settings.model), quiet=True)
    report = run_batch(options, InProcess(options.spec, t2i_model))
    return out, options, report


def test_a_batch_writes_one_cog_per_item_and_records_the_failure(first_run):
    out, _, report = first_run
    assert (report.count("done"), report.count("failed")) == (3, 1)
    for name in ("farm", "wood", "town"):
        valid, errors, _ = cog_validate(str(out / f"{name}.tif"), strict=False)
        assert valid, errors
    body = json.loads((out / "batch-report.json").read_text())
    failed = [r for r in body["results"] if r["status"] == "failed"]
    assert [r["key"] for r in failed] == ["nope"] and "prompt" in failed[0]["error"]


def test_the_stac_collection_reads_back_with_pystac(first_run):
    import pystac

    out, _, _ = first_run
    collection = pystac.read_file(str(out / "collection.json"))
    items = {i.id: i for i in collection.get_items()}
    assert set(items) == {"farm", "wood", "town"}
    for name, item in items.items():
        href = item.assets["image"].get_absolute_href()
        assert href == str(out / f"{name}.tif")
        with rasterio.open(href) as src:
            left, bottom, right, top = Transformer.from_crs(
                src.crs.to_wkt(), "EPSG:4326", always_xy=True).transform_bounds(
                *src.bounds, densify_pts=21)
            assert item.bbox == pytest.approx([left, bottom, right, top], abs=1e-9)
            assert item.properties["proj:shape"] == [src.height, src.width]
            assert item.properties["proj:transform"] == pytest.approx(list(src.transform)[:6])
            assert CRS.from_user_input(item.properties["proj:code"]).equals(src.crs.to_wkt())
            tags = src.tags()
        assert shapely.geometry.shape(item.geometry).is_valid
        assert item.properties["text2earth:synthetic"] is True
        assert item.properties["text2earth:seed"] == int(tags["TEXT2EARTH_SEED"])
        assert item.properties["text2earth:level"] == 17
        assert item.properties["text2earth:precision"] == "fp32"
        # the model folder by its name: no local path in the catalog
        assert item.properties["text2earth:model"] == "text2earth-tiny"
        assert item.properties["text2earth:model_sha256"] == tags["TEXT2EARTH_MODEL_SHA256"]
    assert items["farm"].properties["text2earth:prompt"] == "farmland"
    assert [f["id"] for f in collection.extra_fields["text2earth:failures"]] == ["nope"]


def test_the_stac_collection_validates_when_pystac_can(first_run):
    import pystac

    collection = pystac.read_file(str(first_run[0] / "collection.json"))
    try:
        collection.validate_all()
    except ImportError as exc:  # pystac's validator needs jsonschema >= 4.18 (Debian: 4.10)
        pytest.skip(f"pystac's validator is not usable here: {exc}")
    except pystac.errors.STACValidationError as exc:
        if "Max retries" in str(exc) or "URLError" in str(exc):
            pytest.skip("the extension schemas are online only")
        raise


def test_a_rerun_rewrites_nothing_and_a_changed_item_is_redone(first_run, t2i_model):
    out, options, _ = first_run
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "batch-report.json")
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files}
    report = run_batch(options, InProcess(options.spec, t2i_model))
    assert (report.count("skipped"), report.count("done")) == (3, 0)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files} == before
    # a changed input (steps) changes the fingerprint: the outputs are made again
    changed = BatchOptions(options.items, out, Settings(**{**options.settings.__dict__,
                                                             "steps": 1}),
                           options.spec, quiet=True)
    report = run_batch(changed, InProcess(options.spec, t2i_model))
    assert report.count("done") == 3
    with rasterio.open(out / "farm.tif") as src:
        assert src.tags()["TEXT2EARTH_STEPS"] == "1"
        assert src.tags()[FINGERPRINT_TAG] != ""
    assert not [p for p in out.iterdir() if p.name.startswith(".t2e-")]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_fails_in_seconds_naming_it():
    address = f"127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(ClusterError) as info:
        make_workers(ModelSpec("unused"), 2, address)
    assert time.monotonic() - start < 5
    assert address in str(info.value) and "ray start --head" in str(info.value)


def test_the_cli_runs_a_batch_and_refuses_an_unreachable_cluster(tmp_path, three_items,
                                                                 tiny_t2i):
    cmd = [sys.executable, "-m", "engine.cli", "batch", str(three_items), "--out-dir",
           str(tmp_path / "out"), "--model", str(tiny_t2i), "--steps", "1", "--tile", "256",
           "--precision", "fp32", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 7, done.stderr  # one item failed; the others were made
    assert "3 done, 0 already there, 1 failed" in done.stderr
    assert "failed: nope: no prompt" in done.stderr
    address = f"127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    refused = subprocess.run(cmd + ["--ray-address", address, "--workers", "2"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 6
    assert time.monotonic() - start < 30  # a cold interpreter's imports included
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and address in lines[0]


def test_the_scaling_model_on_known_numbers():
    from engine.batch.scaling import city_side, scaling_table, scene_seconds, wavefront_sizes

    side = city_side()  # 1.6 Gpx: 40,000 px square
    sizes = wavefront_sizes(side, side)
    # 512 px windows at stride 448: ceil((40000 - 64) / 448) = 90 per side; wavefronts
    # k = ix + 2 iy run 0 .. 89 + 2 * 89, the widest holds one window per iy in 45 rows
    assert side == 40_000 and sum(sizes) == 90 * 90
    assert len(sizes) == 89 + 2 * 89 + 1 and max(sizes) == 45
    # wavefronts of 1, 2, 1 windows on 2 GPUs: 3 rounds; on 1 GPU: 4
    assert scene_seconds([1, 2, 1], 2, 1.0, round_trip_s=0) == 3
    assert scene_seconds([1, 2, 1], 1, 1.0, 0.5, round_trip_s=0) == 4 + 4 * 0.5
    rows = scaling_table(sizes, 1.5, 0.0, gpus=(1, 64, 1000))
    # 64 GPUs or more: one round per wavefront, 268 rounds instead of 8100
    assert rows[1].seconds == pytest.approx(268 * 1.5 + 268 * 0.005)
    assert rows[2].seconds == rows[1].seconds and rows[1].speedup < 8100 / 268
