"""`text2earth label`: zero-shot labels per window, checked against transformers' SigLIP, and
the grid read back with GDAL's own OGR, its polygons against rasterio's window bounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rank_support
import rasterio
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
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32631"
    features = sorted(layer, key=lambda f: f.GetField("col"))
    for feature, probs, col in zip(features, table, (0, 256), strict=True):
        best = int(np.argmax(probs))
        assert feature.GetField("label") == LABELS[best]
        assert feature.GetField("probability") == pytest.approx(probs[best], abs=1e-3)
        assert feature.GetField("second") == LABELS[int(np.argsort(-probs)[1])]
        xmin, xmax, ymin, ymax = feature.GetGeometryRef().GetEnvelope()
        want = bounds(Window(col, 0, 256, 256), rasterio.open(path).transform)
        assert (xmin, ymin, xmax, ymax) == pytest.approx(want, abs=1e-6)


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
