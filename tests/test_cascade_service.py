"""The service takes cascade scenes: scene_method "cascade" runs to a tagged file; a ladder
that does not fit is a 422 at submission, nothing written."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import rasterio

from text2earth_qgis.core.service.client import ServiceError, start_local_service

ROOT = Path(__file__).resolve().parents[1]
UTM = "EPSG:32632"
BBOX = [447000.0, 5411000.0, 447400.0, 5411300.0]  # 3 x 2 windows at level 17


def test_cascade_job_runs_and_a_bad_ladder_is_refused(tiny_t2i, tmp_path):
    out_dir = (tmp_path / "out").resolve()
    out_dir.mkdir()
    svc = start_local_service(python=sys.executable, output_dirs=[str(out_dir)],
                              model=str(tiny_t2i), device="cpu", timeout=120,
                              env={"PYTHONPATH": str(ROOT)})
    try:
        body = {"bbox": BBOX, "crs": UTM, "prompt": "farmland", "level": 17, "steps": 2,
                "seed": 7, "scene_method": "cascade", "precision": "fp32"}
        for bad, words in (({"cascade_strengths": [0.5, 0.5]}, "give 3 strengths"),
                           ({"cascade_coarse_level": 17}, "not finer than")):
            try:
                svc.client.submit({**body, **bad, "out": "bad.tif"})
                raise AssertionError("a ladder that does not fit was queued")
            except ServiceError as exc:
                assert exc.status == 422 and words in str(exc), str(exc)
        job = svc.client.submit({**body, "cascade_strengths": [0.7, 0.6, 0.4],
                                 "out": "cascade.tif"})
        deadline = time.monotonic() + 300
        while (status := svc.client.status(job["id"]))["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status["state"] == "done", status
    finally:
        svc.stop()
    with rasterio.open(out_dir / "cascade.tif") as ds:
        tags = ds.tags()
        assert (ds.width, ds.height) == (509, 382) and ds.crs.to_epsg() == 32632
    assert tags["TEXT2EARTH_SCENE_METHOD"] == "cascade"
    assert tags["TEXT2EARTH_CASCADE_LEVELS"] == "14,15,16,17"
    assert tags["TEXT2EARTH_CASCADE_STRENGTHS"] == "0.7,0.6,0.4"
    assert sorted(p.name for p in out_dir.iterdir()) == ["cascade.tif"]
