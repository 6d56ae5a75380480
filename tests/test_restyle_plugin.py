"""The Processing algorithm "Restyle raster" in headless QGIS: the job it sends (the engine
call is recorded), the mask brought into the raster's CRS (judged against pyproj here), and
refusals. QGIS runs in a subprocess (the probe below) that never imports rasterio or pyproj.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyproj import Transformer

ROOT = Path(__file__).resolve().parents[1]
RASTER = ROOT.parent / "shared" / "data" / "rasters" / "RGB.byte.tif"
LONLAT_RING = [[-77.5, 24.5], [-77.4, 24.5], [-77.4, 24.6], [-77.5, 24.6], [-77.5, 24.5]]

PROBE = r'''
import json, os, sys
from pathlib import Path
from unittest import mock
sys.path.insert(0, os.environ["T2E_TESTS"])
from qgis_harness import app, iface  # noqa: F401 - starts QGIS
import processing
from processing.core.Processing import Processing
from qgis.core import (QgsFeature, QgsGeometry, QgsProcessingFeedback, QgsProject,
                       QgsRasterLayer, QgsVectorLayer)
import text2earth_qgis
from text2earth_qgis.processing import restyle_algorithm

Processing.initialize()
plugin = text2earth_qgis.classFactory(iface)
plugin.initProcessing()
project = QgsProject.instance()
source = QgsRasterLayer(os.environ["T2E_RASTER"], "source", "gdal")
project.addMapLayer(source)
mask = QgsVectorLayer("Polygon?crs=EPSG:4326", "mask", "memory")
feature = QgsFeature()
feature.setGeometry(QgsGeometry.fromWkt(os.environ["T2E_MASK_WKT"]))
mask.dataProvider().addFeatures([feature])
project.addMapLayer(mask)
sent, report = [], {}

def record(manager, job, destination, feedback, context=None):
    sent.append({"job": job, "destination": destination})
    return destination

def run(params):
    try:
        return processing.run("text2earth:restyleraster", params,
                              feedback=QgsProcessingFeedback()), None
    except Exception as exc:  # Processing's own refusals, or ours
        return None, str(exc)

out = str(Path(os.environ["T2E_WORK"]) / "restyled.tif")
base = {"INPUT": source, "PROMPT": "a desert", "STRENGTH": 0.35, "SEED": 4, "STEPS": 3,
        "LEVEL": 2, "OUTPUT": out}
with mock.patch.object(restyle_algorithm, "run_on_engine", record):
    report["whole"] = run(base)
    report["masked"] = run({**base, "MASK": mask, "DILATE": 2, "FEATHER": 1})
    report["too_strong"] = run({**base, "STRENGTH": 1.5})
    report["no_prompt"] = run({**base, "PROMPT": " "})
    report["png"] = run({**base, "OUTPUT": out[:-4] + ".png"})
report["sent"] = sent

# The real run, against a stand-in service whose results are demo-weight pipeline checks:
# QGIS's own post-processing (what the Processing dialog runs) loads what was written.
import shutil
import processing.gui.Postprocessing as post
from fake_service import FakeService
from qgis.core import QgsProcessingContext, QgsProcessingOutputLayerDefinition

class RestyleService(FakeService):
    def run(self, job_id, body):
        body = {**body, "bbox": [0, 0, 1, 1], "crs": "EPSG:32618", "level": 11}
        result = super().run(job_id, body)
        result.update(width=791, height=718)
        return result

work = Path(os.environ["T2E_WORK"])
for name in ("asked.tif", "asked.pipeline-check.tif"):
    (work / name).unlink(missing_ok=True)
with RestyleService(work / "staging", tags={"TEXT2EARTH_PIPELINE_CHECK": "yes: demo"},
                    make_file=lambda job, index, path: shutil.copyfile(
                        os.environ["T2E_RASTER"], path)) as service:
    plugin.manager.settings.url = service.url
    errors = []

    class Feedback(QgsProcessingFeedback):
        def reportError(self, error, fatalError=False):
            errors.append(error)

    feedback, context = Feedback(), QgsProcessingContext()
    context.setProject(project)
    results = processing.run("text2earth:restyleraster",
                             {**base, "OUTPUT": QgsProcessingOutputLayerDefinition(
                                 str(work / "asked.tif"), project)},  # as the dialog sends
                             feedback=feedback, context=context,
                             onFinish=post.handleAlgorithmResults)
    report["real"] = {"returned": results["OUTPUT"], "errors": errors,
                      "loaded": [layer.source() for layer in project.mapLayers().values()],
                      "names": {layer.source(): layer.name()
                                for layer in project.mapLayers().values()},
                      "files": sorted(p.name for p in work.glob("asked*"))}
    readonly = work / "readonly-file"
    readonly.write_text("x")
    report["blocked"] = run({**base, "OUTPUT": str(readonly / "out.tif")})
    report["blocked_jobs"] = len(service.jobs)
report["heavy"] = sorted(m for m in ("rasterio", "torch", "pyproj") if m in sys.modules)
print(json.dumps(report, default=str), flush=True)
os._exit(0)
'''


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("restyle-plugin")
    wkt = "POLYGON ((" + ", ".join(f"{x} {y}" for x, y in LONLAT_RING) + "))"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", T2E_RASTER=str(RASTER),
               T2E_WORK=str(work), T2E_MASK_WKT=wkt, T2E_TESTS=str(ROOT / "tests"))
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_whole_raster_job(report):
    assert report["heavy"] == []
    whole = report["sent"][0]
    job = whole["job"]
    assert job["type"] == "restyle" and job["raster"] == str(RASTER)
    assert job["strength"] == pytest.approx(0.35) and job["prompt"] == "a desert"
    assert (job["seed"], job["steps"], job["level"]) == (4, 3, 11)  # LEVEL 2: 10, 11, ...
    assert "mask" not in job
    assert whole["destination"].endswith("restyled.tif")


def test_masked_job_carries_the_polygon_in_the_raster_crs(report):
    job = report["sent"][1]["job"]
    assert (job["dilate"], job["feather"]) == (2, 1)
    assert "32618" in job["mask_crs"]
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32618", always_xy=True)
    ring = job["mask"]["coordinates"][0][0]
    expected = [to_utm.transform(x, y) for x, y in LONLAT_RING]
    assert len(ring) == len(expected)
    for (x, y), (ex, ey) in zip(ring, expected, strict=True):
        assert x == pytest.approx(ex, abs=0.01) and y == pytest.approx(ey, abs=0.01)


def test_the_written_file_is_returned_and_loaded(report):
    """The engine names a demo-weight result '.pipeline-check.tif': that file is what the
    algorithm returns and what QGIS loads, with no 'not correctly generated'."""
    real = report["real"]
    assert real["files"] == ["asked.pipeline-check.tif"]
    assert real["returned"].endswith("asked.pipeline-check.tif")
    assert real["returned"] in real["loaded"]
    # Named as the dock names its results: kind and prompt first, the demo weights said last.
    assert real["names"][real["returned"]] == "restyle: a desert — Text2Earth (pipeline check)"
    assert real["errors"] == []


def test_an_output_folder_that_cannot_be_made_is_named_before_the_engine(report):
    result, error = report["blocked"]
    assert result is None and report["blocked_jobs"] == 1  # only the real run's job
    assert "readonly-file" in error and "Choose another output folder" in error


def test_bad_input_is_refused_before_the_engine(report):
    assert len(report["sent"]) == 2  # only the two good runs reached the engine
    for name in ("too_strong", "no_prompt", "png"):
        assert report[name][0] is None and report[name][1], name
    assert "prompt" in report["no_prompt"][1]
    assert "GeoTIFF" in report["png"][1]
