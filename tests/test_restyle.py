"""Restyling real rasters (image-to-image on the source's grid): strength 0 is the source bit
for bit; the grid, bands, dtype and nodata are kept; a masked restyle changes nothing outside
the grown mask; bad input gets one line and writes nothing.

References are independent of the engine: rasterio reading both files, the mask burnt with
rasterio.features.rasterize and grown with numpy shifts, GDAL's own masks for nodata.
Pixel comparisons run in fp32 on the tiny checkpoints.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import SHARED_RASTERS
from rasterio.features import rasterize
from rasterio.windows import Window

from engine.errors import InputError
from engine.jobs.restyle import RestyleRequest, restyle_raster

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(steps=2, tile=64, overlap=16, seed=5)


@pytest.fixture(scope="module")
def inpaint_model(tiny_inpaint):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_inpaint), "cpu", precision="fp32")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cut(source: str, window: Window, path: Path, **changes) -> Path:
    """A small piece of a real raster, written with rasterio (its profile kept)."""
    with rasterio.open(SHARED_RASTERS / source) as src:
        profile = dict(src.profile, width=window.width, height=window.height,
                       transform=src.window_transform(window), **changes)
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        profile["tiled"] = False
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.colorinterp = src.colorinterp
    return path


@pytest.fixture(scope="module")
def rgb_edge(tmp_path_factory) -> Path:
    """96 x 80 px of RGB.byte.tif's western edge (UTM 18N, uint8, nodata 0 beside data)."""
    return cut("RGB.byte.tif", Window(0, 300, 96, 80),
               tmp_path_factory.mktemp("rgb") / "rgb_edge.tif")


@pytest.fixture(scope="module")
def shade_small(tmp_path_factory) -> Path:
    """96 x 80 px of shade.tif (Web Mercator, one gray band, nodata 255)."""
    return cut("shade.tif", Window(380, 380, 96, 80),
               tmp_path_factory.mktemp("shade") / "shade_small.tif")


def refuse_models(model):
    pipe = model.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a model was called")

    return [m.register_forward_pre_hook(refuse) for m in (pipe.unet, pipe.vae, pipe.text_encoder)]


def test_strength_zero_is_the_source_bit_for_bit_without_a_model_call(tmp_path, inpaint_model,
                                                                      rgb_edge):
    hooks = refuse_models(inpaint_model)
    try:
        out = tmp_path / "zero.tif"
        result = restyle_raster(RestyleRequest(raster=rgb_edge, prompt="a lake", out=out,
                                               strength=0.0, **FAST), inpaint_model)
    finally:
        for h in hooks:
            h.remove()
    with rasterio.open(rgb_edge) as a, rasterio.open(out) as b:
        assert np.array_equal(a.read(), b.read())
        assert np.array_equal(a.dataset_mask(), b.dataset_mask())
        assert (b.crs, b.transform, b.nodata, b.dtypes) == (a.crs, a.transform, a.nodata,
                                                            a.dtypes)
        tags = b.tags()
    assert tags["TEXT2EARTH_STRENGTH"] == "0"
    assert tags["TEXT2EARTH_WINDOWS"] == "0"
    assert result.notes and "unchanged" in result.notes[-1]


@pytest.mark.parametrize("fixture", ["rgb_edge", "shade_small"])
def test_grid_bands_dtype_and_nodata_are_kept(tmp_path, inpaint_model, fixture, request):
    source = request.getfixturevalue(fixture)
    before = sha256(source)
    out = tmp_path / "restyled.tif"
    restyle_raster(RestyleRequest(raster=source, prompt="dense forest", out=out,
                                  strength=0.5, **FAST), inpaint_model)
    assert sha256(source) == before  # the source is never written
    with rasterio.open(source) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.width, b.height, b.count) == \
            (a.crs, a.transform, a.width, a.height, a.count)
        assert (b.dtypes, b.nodata, b.colorinterp) == (a.dtypes, a.nodata, a.colorinterp)
        src, new = a.read(), b.read()
        valid_before, valid_after = a.dataset_mask() > 0, b.dataset_mask() > 0
        tags = b.tags()
    assert (~valid_before).any() and valid_before.any()  # both kinds of pixel are here
    # nodata stays nodata with its exact values; data stays data
    assert np.array_equal(src[:, ~valid_before], new[:, ~valid_before])
    assert np.array_equal(valid_before, valid_after)
    changed = np.any(new != src, axis=0)
    assert changed[valid_before].mean() > 0.5
    assert tags["TEXT2EARTH_STRENGTH"] == "0.5"
    assert tags["TEXT2EARTH_STRENGTH_STEPS"] == "1 of 2"
    assert tags["TEXT2EARTH_EDIT"].startswith("restyled (image-to-image)")


def grown_reference(geom: dict, ds, grow: int) -> np.ndarray:
    """The polygon burnt by rasterio (all touched), grown by ``grow`` px with numpy shifts."""
    burnt = rasterize([(geom, 1)], out_shape=ds.shape, transform=ds.transform,
                      all_touched=True, dtype="uint8").astype(bool)
    out = burnt.copy()
    h, w = burnt.shape
    for dy in range(-grow, grow + 1):
        for dx in range(-grow, grow + 1):
            shifted = np.zeros_like(burnt)
            shifted[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)] = \
                burnt[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
            out |= shifted
    return out


def test_masked_restyle_changes_nothing_outside_the_grown_mask(tmp_path, inpaint_model,
                                                               shade_small):
    with rasterio.open(shade_small) as ds:
        x0, y0 = ds.transform * (30.5, 20.5)
        x1, y1 = ds.transform * (60.5, 45.5)
        geom = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1],
                                                    [x0, y0]]]}
        allowed = grown_reference(geom, ds, 3)
        inside = rasterize([(geom, 1)], out_shape=ds.shape, transform=ds.transform,
                           dtype="uint8").astype(bool)
        src = ds.read()
        valid = ds.dataset_mask() > 0  # much of this piece is nodata: it stays so
    out = tmp_path / "masked.tif"
    restyle_raster(RestyleRequest(raster=shade_small, prompt="a quarry", out=out, mask=geom,
                                  mask_crs="EPSG:3857", dilate=3, feather=2, strength=0.5,
                                  **FAST), inpaint_model)
    with rasterio.open(out) as ds:
        new = ds.read()
    changed = np.any(new != src, axis=0)
    assert not changed[~allowed].any(), "a pixel outside the grown mask changed"
    assert (inside & valid).sum() > 100 and changed[inside & valid].mean() > 0.5
    assert not changed[~valid].any()


def test_mean_change_grows_with_strength_fp32(tmp_path, inpaint_model, shade_small):
    """Strength 0 changes nothing; a stronger restyle departs further from the source (the
    tiny model's random VAE round trip changes a lot on its own, so the figure is measured
    against the weakest restyle and in how many pixels move)."""
    outs = {}
    for strength in (0.0, 0.25, 0.5, 1.0):
        out = tmp_path / f"s{strength}.tif"
        restyle_raster(RestyleRequest(raster=shade_small, prompt="fields", out=out,
                                      strength=strength, **dict(FAST, steps=4)),
                       inpaint_model)
        with rasterio.open(out) as ds:
            outs[strength] = ds.read().astype(np.float64)
    with rasterio.open(shade_small) as ds:
        src = ds.read().astype(np.float64)
        valid = ds.dataset_mask() > 0
    assert np.abs(outs[0.0] - src).max() == 0
    base = outs[0.25]
    away = [np.abs(outs[s] - base)[:, valid].mean() for s in (0.25, 0.5, 1.0)]
    assert (np.diff(away) > 0).all(), away
    assert np.abs(base - src)[:, valid].mean() > 0


@pytest.mark.parametrize("strength", [-0.1, 1.01, float("nan"), float("inf")])
def test_strength_outside_0_1_is_refused_and_nothing_written(tmp_path, inpaint_model,
                                                            shade_small, strength):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InputError, match="strength must be from 0"):
        restyle_raster(RestyleRequest(raster=shade_small, prompt="x", out=out_dir / "o.tif",
                                      strength=strength, **FAST), inpaint_model)
    assert list(out_dir.iterdir()) == []


def test_raster_without_crs_is_refused(tmp_path, inpaint_model):
    with pytest.raises(InputError, match="no coordinate reference system"):
        restyle_raster(RestyleRequest(raster=SHARED_RASTERS / "float_nan.tif", prompt="x",
                                      out=tmp_path / "o.tif", **FAST), inpaint_model)
    assert list(tmp_path.iterdir()) == []


def test_all_nodata_raster_is_refused(tmp_path, inpaint_model, shade_small):
    empty = tmp_path / "empty.tif"
    with rasterio.open(shade_small) as src:
        with rasterio.open(empty, "w", **src.profile) as dst:
            dst.write(np.full((1, src.height, src.width), 255, np.uint8))
    with pytest.raises(InputError, match="only nodata or transparent pixels: nothing to restyle"):
        restyle_raster(RestyleRequest(raster=empty, prompt="x", out=tmp_path / "o.tif",
                                      **FAST), inpaint_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif"]


def test_cli_restyle(tmp_path, tiny_inpaint, shade_small):
    cli = [sys.executable, "-m", "engine.cli", "restyle"]
    common = ["--raster", str(shade_small), "--prompt", "a lake", "--steps", "2", "--tile",
              "64", "--overlap", "16", "--model", str(tiny_inpaint), "--quiet", "--seed", "1"]
    done = subprocess.run([*cli, *common, "--strength", "0.5", "--out",
                           str(tmp_path / "r.tif")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "r.tif")
    with rasterio.open(tmp_path / "r.tif") as ds:
        assert ds.tags()["TEXT2EARTH_STRENGTH"] == "0.5"
    bad = subprocess.run([*cli, *common, "--strength", "2", "--out", str(tmp_path / "b.tif")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "strength must be from 0" in bad.stderr
    assert not (tmp_path / "b.tif").exists()
