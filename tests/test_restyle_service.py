"""The service's restyle jobs and generate jobs with an init raster, through the plugin's own
client against a real local service on the tiny checkpoints; bad input is a 422 at once."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from test_init_raster import extent_3857, init_geotiff

from text2earth_qgis.core.service.client import ServiceError, start_local_service

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "rasters"
WAIT = 180.0


@pytest.fixture(scope="module")
def service(tiny_t2i, tmp_path_factory):
    out = tmp_path_factory.mktemp("restyle-service").resolve()
    svc = start_local_service(python=sys.executable, output_dirs=[str(out)],
                              model=str(tiny_t2i), device="cpu", timeout=120,
                              env={"PYTHONPATH": str(ROOT)})
    yield svc, out
    svc.stop()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "small.tif"
    with rasterio.open(SHARED / "RGB.byte.tif") as src:
        window = Window(300, 300, 48, 40)
        profile = dict(src.profile, width=48, height=40, transform=src.window_transform(window))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return path


def restyle_body(raster: Path, model: Path, **changes) -> dict:
    body = {"type": "restyle", "raster": str(raster), "prompt": "a lake", "steps": 2,
            "seed": 3, "tile": 64, "overlap": 16, "model": str(model), "strength": 0.5,
            "out": "restyled.tif"}
    body.update(changes)
    return body


def test_restyle_job_keeps_the_grid_and_records_strength(service, tiny_inpaint, small):
    svc, out = service
    submitted = svc.client.submit(restyle_body(small, tiny_inpaint))
    result = svc.client.wait(submitted["id"], poll=0.05, timeout=WAIT)
    assert Path(result["path"]) == out / "restyled.tif"
    with rasterio.open(small) as a, rasterio.open(result["path"]) as b:
        assert (b.crs, b.transform, b.width, b.height, b.nodata) == \
            (a.crs, a.transform, a.width, a.height, a.nodata)
        assert (b.read() != a.read()).any()
    assert result["tags"]["TEXT2EARTH_STRENGTH"] == "0.5"


def test_restyle_job_at_strength_zero_is_the_source(service, tiny_inpaint, small):
    svc, _ = service
    body = restyle_body(small, tiny_inpaint, strength=0.0, out="zero.tif")
    result = svc.client.wait(svc.client.submit(body)["id"], poll=0.05, timeout=WAIT)
    with rasterio.open(small) as a, rasterio.open(result["path"]) as b:
        assert np.array_equal(a.read(), b.read())


def test_generate_job_with_an_init_raster(service, tmp_path):
    svc, _ = service
    init = init_geotiff(tmp_path / "init.tif")
    body = {"bbox": list(extent_3857()), "crs": "EPSG:3857", "prompt": "fields", "level": 16,
            "steps": 2, "seed": 1, "init_raster": str(init), "strength": 0.5,
            "out": "from_init.tif"}
    result = svc.client.wait(svc.client.submit(body)["id"], poll=0.05, timeout=WAIT)
    assert result["tags"]["TEXT2EARTH_STRENGTH"] == "0.5"
    assert result["tags"]["TEXT2EARTH_INIT_RASTER"] == "init.tif"


@pytest.mark.parametrize("changes,words", [
    (dict(strength=1.5), "strength"),
    (dict(strength=-0.1), "strength"),
    (dict(raster=str(SHARED / "rotated.tif")), "no coordinate reference system"),
    (dict(mask="POLYGON ((0 0, 1 0, 1 1, 0 0))"), "outside the raster"),
])
def test_invalid_restyle_jobs_are_422(service, tiny_inpaint, small, changes, words):
    svc, out = service
    try:
        svc.client.submit({**restyle_body(small, tiny_inpaint, out="bad.tif"), **changes})
    except ServiceError as exc:
        assert exc.status == 422 and words in exc.message
    else:
        pytest.fail("accepted")
    assert not (out / "bad.tif").exists()


@pytest.mark.parametrize("changes,words", [
    (dict(strength=2.0), "strength"),
    (dict(init_raster="init.tif"), "absolute path"),
    (dict(bbox=[0, 0, 300, 300]), "does not overlap the extent"),
])
def test_invalid_init_raster_jobs_are_422(service, tmp_path, changes, words):
    svc, out = service
    init = init_geotiff(tmp_path / "init.tif")
    body = {"bbox": list(extent_3857()), "crs": "EPSG:3857", "prompt": "fields", "level": 16,
            "steps": 2, "init_raster": str(init), "out": "bad-init.tif", **changes}
    try:
        svc.client.submit(body)
    except ServiceError as exc:
        assert exc.status == 422 and words in exc.message
    else:
        pytest.fail("accepted")
    assert not (out / "bad-init.tif").exists()
