"""The "Label raster (zero-shot)" Processing algorithm in headless QGIS, end to end: the
engine CLI runs the tiny Git-RSCLIP, QGIS reads the grid; labels checked against transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rank_support
import rasterio
from rank_support import reference_probabilities
from rasterio.transform import from_origin

from engine.quality.labels import TEMPLATE

tiny_rank = rank_support.tiny_rank  # the shared fixture
PROBE = Path(__file__).with_name("label_algorithm_probe.py")
LABELS = ["forest", "airport", "harbor", "desert"]


def test_label_algorithm_writes_the_grid_qgis_reads(tiny_rank, tmp_path):
    rng = np.random.default_rng(4)
    left = rng.integers(0, 90, (256, 256, 3), np.uint8)
    right = rng.integers(150, 256, (256, 256, 3), np.uint8)
    raster = tmp_path / "scene.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=512, height=256, count=3,
                       dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(400000, 5000000, 1.0, 1.0)) as dst:
        dst.write(np.moveaxis(np.concatenate([left, right], axis=1), 2, 0))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TEXT2EARTH_RANK_MODEL=str(tiny_rank))
    result = subprocess.run([sys.executable, str(PROBE), str(raster),
                             str(tmp_path / "grid.gpkg"), str(labels)],
                            capture_output=True, text=True, env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "text2earth:labelraster" in report["algorithms"]
    assert "error" not in report, report
    assert report["valid"] and report["crs"] == "EPSG:32633"
    table = reference_probabilities(tiny_rank, [left, right],
                                     [TEMPLATE.format(label) for label in LABELS])
    features = sorted(report["features"], key=lambda f: f["col"])
    assert len(features) == 2
    for feature, probs, x0 in zip(features, table, (400000, 400256), strict=True):
        assert feature["label"] == LABELS[int(np.argmax(probs))]
        assert abs(feature["probability"] - probs.max()) < 1e-3
        assert feature["bbox"] == [x0, x0 + 256]
    assert any("2 windows" in line for line in report["infos"])
    assert ".gpkg" in report["bad_destination"] or "GeoPackage" in report["bad_destination"]
