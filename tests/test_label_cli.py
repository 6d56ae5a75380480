"""`text2earth label`: zero-shot labels per window, checked against transformers' SigLIP, and
the grid read back with GDAL's own OGR, its polygons against rasterio's window bounds."""

from __future__ import annotations

import hashlib
import json
import subprocess

import numpy as np
import pytest
import rank_support
import rasterio
from pyproj import Transformer
from rank_support import reference_probabilities
from rasterio.transform import from_origin
from rasterio.windows import Window, bounds

from engine.cli import main
from engine.quality.labels import TEMPLATE, read_labels

tiny_rank = rank_support.tiny_rank  # the shared fixture
LABELS = ["forest", "airport", "harbor", "desert"]


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    rng = np.random.default_rng(9)
    left = rng.integers(0, 100, (256, 256, 3), np.uint8)
    right = np.full((256, 256, 3), 220, np.uint8)
    path = tmp_path_factory.mktemp("label") / "two.tif"
    with rasterio.open(path, "w", driver="GTiff", width=512, height=256, count=3, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(500000, 4600000, 0.5, 0.5)) as dst:
        dst.write(np.moveaxis(np.concatenate([left, right], axis=1), 2, 0))
    return path, left, right


def test_default_labels_are_aids_thirty_classes():
    labels = read_labels()
    assert len(labels) == 30 and labels[0] == "airport" and "storage tanks" in labels


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_labels_per_window_match_transformers(tiny_rank, raster, tmp_path, capsys, suffix):
    from osgeo import ogr

    path, left, right = raster
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# mine\n" + "\n".join(LABELS) + "\n\n")
    out = tmp_path / f"grid{suffix}"
    code = main(["label", "--raster", str(path), "--labels", str(labels_file),
                 "--rank-model", str(tiny_rank), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["windows"] == 2 and summary["grid"] == str(out)
    texts = [TEMPLATE.format(label) for label in LABELS]
    table = reference_probabilities(tiny_rank, [left, right], texts)
    ds = ogr.Open(str(out))
    layer = ds.GetLayer(0)
    assert layer.GetFeatureCount() == 2
    # the GeoPackage keeps the raster's CRS; GeoJSON is WGS 84 lon/lat (RFC 7946)
    want_crs = "32631" if suffix == ".gpkg" else "4326"
    assert layer.GetSpatialRef().GetAuthorityCode(None) == want_crs
    to_grid = Transformer.from_crs("EPSG:4326", "EPSG:32631", always_xy=True)
    features = sorted(layer, key=lambda f: f.GetField("col"))
    for feature, probs, col in zip(features, table, (0, 256), strict=True):
        best = int(np.argmax(probs))
        assert feature.GetField("label") == LABELS[best]
        assert feature.GetField("probability") == pytest.approx(probs[best], abs=1e-3)
        assert feature.GetField("second") == LABELS[int(np.argsort(-probs)[1])]
        xmin, xmax, ymin, ymax = feature.GetGeometryRef().GetEnvelope()
        if suffix == ".geojson":  # 7 decimals of a degree: 1 cm
            (xmin, xmax), (ymin, ymax) = to_grid.transform((xmin, xmax), (ymin, ymax))
        want = bounds(Window(col, 0, 256, 256), rasterio.open(path).transform)
        assert (xmin, ymin, xmax, ymax) == pytest.approx(want, abs=1e-6 if suffix == ".gpkg"
                                                         else 0.05)


def test_bad_inputs_are_one_line(tiny_rank, raster, tmp_path, capsys):
    path, _, _ = raster
    one = tmp_path / "one.txt"
    one.write_text("forest\n")
    for argv, words in [
        (["--labels", str(one)], "at least two"),
        (["--labels", str(tmp_path / "none.txt")], "cannot read the labels file"),
        (["--out", str(tmp_path / "grid.shp")], ".geojson or .gpkg"),
        (["--template", "no slot"], "{}"),
    ]:
        code = main(["label", "--raster", str(path), "--rank-model", str(tiny_rank), *argv])
        err = capsys.readouterr().err
        assert code == 2 and words in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.txt"]


@pytest.fixture(scope="module")
def grids(tiny_rank, raster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("grids")
    for suffix in (".gpkg", ".geojson"):
        assert main(["label", "--raster", str(raster[0]), "--rank-model", str(tiny_rank),
                     "--out", str(folder / f"grid{suffix}")]) == 0
    return folder


def test_the_geopackage_opens_in_gdal_3_6_without_a_warning(grids):
    import sqlite3

    done = subprocess.run(["ogrinfo", "-ro", "-so", "-al", str(grids / "grid.gpkg")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    with sqlite3.connect(grids / "grid.gpkg") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200  # GeoPackage 1.2


def test_the_geojson_is_wgs84_per_rfc7946(grids, raster):
    body = json.loads((grids / "grid.geojson").read_text())
    assert "crs" not in body  # RFC 7946: always WGS 84 lon/lat, no crs member
    ring = body["features"][0]["geometry"]["coordinates"][0]
    with rasterio.open(raster[0]) as src:
        corner = src.transform * (0, 0)
    lon, lat = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True).transform(*corner)
    assert min(abs(x - lon) + abs(y - lat) for x, y in ring) < 1e-6


def test_the_grid_records_names_and_hashes_not_paths(grids, raster, tiny_rank):
    import pyogrio

    meta = pyogrio.read_info(grids / "grid.gpkg", layer="labels")["dataset_metadata"]
    assert meta["TEXT2EARTH_RASTER"] == "two.tif"
    assert meta["TEXT2EARTH_RASTER_SHA256"] == hashlib.sha256(
        raster[0].read_bytes()).hexdigest()
    assert meta["TEXT2EARTH_RANK_MODEL"] == tiny_rank.name
    sha = meta["TEXT2EARTH_RANK_MODEL_SHA256"]
    assert len(sha) == 64 and sha != hashlib.sha256(b"").hexdigest()  # the weights, hashed
    assert not [v for v in meta.values() if "/" in v or "\\" in v], meta
