"""Coarse-to-fine scenes (--scene-method cascade) on tiny models, fp32 (pixel-exact checks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from pydantic import ValidationError
from rasterio.enums import Resampling

from engine.cli import main
from engine.errors import InputError
from engine.geo.grid import LevelRequest, build_grid
from engine.geo.tiling import tile_seed
from engine.jobs.generate import GenerateRequest, generate, plan
from engine.scenes.cascade import level_seed, upsampled
from engine.scenes.ladder import plan_ladder
from engine.scenes.state import scene_files
from engine.service.schemas import GenerateJob

UTM = "EPSG:32632"
# 400 x 300 m at level 17 (~0.786 m/px): 509 x 382 px, 3 x 2 windows of 256 px (overlap 64)
BBOX = (447000.0, 5411000.0, 447400.0, 5411300.0)


def request(tmp_path, name, **kw):
    fields = dict(bbox=BBOX, crs=UTM, prompt="farmland", out=tmp_path / name, level=17, seed=3,
                  steps=2, tile=256, overlap=64, scene_method="cascade")
    fields.update(kw)
    return GenerateRequest(**fields)


def read(path):
    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read(), 0, 2), ds.profile, ds.tags()


def test_cascade_covers_the_extent_exactly_records_its_ladder_and_is_deterministic(
        tmp_path, t2i_model):
    result = generate(request(tmp_path, "cascade.tif"), t2i_model)
    pixels, profile, tags = read(result.path)
    # The grid a joint scene of the same request lands on, as rasterio reads both files.
    joint = read(generate(request(tmp_path, "joint.tif", scene_method="joint"), t2i_model).path)
    for key in ("crs", "transform", "width", "height"):
        assert profile[key] == joint[1][key]
    left, bottom, right, top = rasterio.transform.array_bounds(
        profile["height"], profile["width"], profile["transform"])
    assert (left, bottom, right, top) == pytest.approx(BBOX, abs=1e-6)
    assert profile["crs"].to_epsg() == 32632 and pixels.shape == (382, 509, 3)
    # The ladder: 8x coarser first (at level 14 the extent is 64 x 48 px: one window).
    assert tags["TEXT2EARTH_SCENE_METHOD"] == "cascade"
    assert tags["TEXT2EARTH_CASCADE_LEVELS"] == "14,15,16,17"
    assert tags["TEXT2EARTH_CASCADE_STRENGTHS"] == "0.6,0.6,0.5"
    assert tags["TEXT2EARTH_WINDOWS"] == "3x2"  # the target level's windows
    assert pixels.std() > 1
    again = read(generate(request(tmp_path, "again.tif"), t2i_model).path)[0]
    np.testing.assert_array_equal(pixels, again)
    other = read(generate(request(tmp_path, "other.tif", seed=4), t2i_model).path)[0]
    assert np.abs(pixels.astype(int) - other).max() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "again.tif", "cascade.tif", "joint.tif", "other.tif"]  # no scratch or level canvas


def test_coarse_pass_is_plain_generation_carried_to_the_target_grid(tmp_path, t2i_model):
    """With strength 0 at every step the output is the coarse pass (the model's own
    text-to-image at level 14) resampled: GDAL's average of it back onto the level-14 grid
    matches that image."""
    req = request(tmp_path, "flat.tif", cascade_strengths=(0.0, 0.0, 0.0))
    result = generate(req, t2i_model)
    pipe = t2i_model.pipeline
    pipe.use_scheduler("euler")
    coarse = pipe("farmland", level=14, height=256, width=256, num_inference_steps=2,
                  guidance_scale=req.guidance,
                  generator=torch.Generator("cpu").manual_seed(
                      tile_seed(level_seed(3, 14), 0, 0))).images[0]
    grid14 = build_grid(BBOX, UTM, LevelRequest(level=14))
    col, row = (256 - grid14.width) // 2, (256 - grid14.height) // 2
    expected = coarse[row : row + grid14.height, col : col + grid14.width].astype(float)
    with rasterio.open(result.path) as ds:
        back = np.moveaxis(ds.read(out_shape=(3, grid14.height, grid14.width),
                                   resampling=Resampling.average), 0, 2).astype(float)
    inner = (slice(2, -2), slice(2, -2))  # the outermost pixels mix in the mirrored margin
    assert np.abs(back[inner] - expected[inner]).mean() < 6
    assert np.corrcoef(back[inner].ravel(), expected[inner].ravel())[0, 1] > 0.97


class CrashError(Exception):
    pass


def test_stopped_cascade_resumes_to_the_same_pixels(tmp_path, t2i_model):
    whole = read(generate(request(tmp_path, "whole.tif"), t2i_model).path)[0]
    out = tmp_path / "resumed.tif"
    # Levels 14-16 are one window each (tiles 1-3); the target's windows are tiles 4-9.
    target_tile = {4 + i: key for i, key in enumerate(
        ["0,0", "1,0", "2,0", "0,1", "1,1", "2,1"])}

    def crash_at_window_2_0(pipe, step, t, tensors):
        if target_tile.get(tensors["tile"]) == "2,0":
            raise CrashError()
        return tensors

    with pytest.raises(CrashError):
        generate(request(tmp_path, "resumed.tif"), t2i_model, crash_at_window_2_0)
    [names] = scene_files(out)
    scratch, state = names.scratch, names.state
    assert scratch.exists() and not out.exists()
    assert json.loads(state.read_text())["done"] == ["0,0", "1,0"]
    assert not [p for p in tmp_path.iterdir() if ".level" in p.name]  # level canvases gone

    seen = []
    generate(request(tmp_path, "resumed.tif"), t2i_model,
             lambda p, s, t, x: seen.append(x["tile"]) or x)
    assert {1, 2, 3} <= set(seen)  # the coarser levels are made again
    assert not {4, 5} & set(seen)  # the finished target windows are not
    np.testing.assert_array_equal(read(out)[0], whole)
    assert not scratch.exists() and not state.exists()


@pytest.mark.parametrize("changes,message", [
    (dict(cascade_coarse_level=17), "not finer than the cascade's coarse level 17"),
    (dict(level=16, cascade_coarse_level=17), "not finer than the cascade's coarse level 17"),
    (dict(cascade_strengths=(0.5, 1.2, 0.5)), "strengths must be numbers in 0..1, got 1.2"),
    (dict(cascade_strengths=(0.5, 0.5)), r"14 -> 15 -> 16 -> 17 \(3 level steps\): give 3"),
    (dict(cascade_strengths=(float("nan"),) * 3), "numbers in 0..1"),
    (dict(cascade_coarse_level=9), "coarse level must be a level in 10..18"),
    (dict(level=None, resolution=128.0), "level 10 is the model's coarsest"),
    (dict(scene_method="joint", cascade_strengths=(0.5,)), "only to the cascade scene method"),
])
def test_a_ladder_that_does_not_fit_is_one_clear_line_before_any_work(tmp_path, changes,
                                                                       message):
    bbox = (447000.0, 5411000.0, 547000.0, 5511000.0) if "resolution" in changes else BBOX
    with pytest.raises(InputError, match=message) as info:
        plan(request(tmp_path, "bad.tif", bbox=bbox, **changes))
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_cascade_refuses_the_inpainting_model(tmp_path, tiny_inpaint):
    from engine.model.checkpoint import load_model

    model = load_model(str(tiny_inpaint), "cpu", precision="fp32")
    with pytest.raises(InputError, match="cascade scene method needs the text-to-image"):
        generate(request(tmp_path, "x.tif"), model)
    assert list(tmp_path.iterdir()) == []


def test_coarse_level_keeps_a_large_extent_within_two_windows(tmp_path):
    # 4 x 4 km at level 17 (~0.786 m/px at 48.9 N): ~5090 px. At level 13 (12.6 m/px) 318 px
    # need 2 x 2 windows, at level 12 (25.2 m/px) 159 px fit in one: the ladder starts there.
    req = request(tmp_path, "big.tif", bbox=(447000.0, 5411000.0, 451000.0, 5415000.0))
    grid = plan(req)
    ladder = plan_ladder(req, grid)
    assert ladder.levels == (12, 13, 14, 15, 16, 17)
    assert ladder.strengths == (0.6, 0.6, 0.6, 0.6, 0.5)
    assert [r.grid.width for r in ladder.rungs] == pytest.approx(
        [4000 / (0.78589 * 2 ** (17 - lvl)) for lvl in range(12, 18)], rel=2e-3)
    assert ladder.rungs[-1].grid is grid  # the target level is the target grid itself


def test_upsampling_is_gdal_cubic_on_the_finer_grid_and_mirrors_past_the_edge(tmp_path):
    """A linear ramp (which cubic resampling reproduces) on a 64 px source read onto pixels
    half the size: the values at the finer pixels' centres, and mirrored past the edge."""
    transform = Affine(2.0, 0, 1000.0, 0, -2.0, 2000.0)
    cols = np.arange(64, dtype=np.float32)
    ramp = np.broadcast_to(100 + 2 * cols, (64, 64))
    path = tmp_path / "coarse.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3,
                       dtype="uint8", crs=UTM, transform=transform) as dst:
        for band in (1, 2, 3):
            dst.write(ramp.astype(np.uint8), band)
    fine = Affine(1.0, 0, 1000.0 + 20.0, 0, -1.0, 2000.0 - 20.0)  # inside: from column 10
    out = upsampled(path, fine, 32)
    x = 20.0 + np.arange(32) + 0.5  # finer pixel centres, in metres from the left edge
    expected = 100 + 2 * (x / 2.0 - 0.5)  # the ramp at those points
    np.testing.assert_allclose(out[16, :, 0], expected, atol=0.6)
    assert out.shape == (32, 32, 3)
    edge = upsampled(path, Affine(1.0, 0, 1000.0 - 16.0, 0, -1.0, 2000.0), 32)
    # 16 m left of the source: the mirror image of its first 8 columns, not black
    assert edge[10, :16, 0].min() > 95
    assert edge[10, 15, 0] == pytest.approx(edge[10, 16, 0], abs=1.5)


def test_cli_and_service_take_the_cascade_options(capsys, tmp_path):
    code = main(["generate", "--bbox", ",".join(map(str, BBOX)), "--crs", UTM, "--prompt",
                 "farmland", "--level", "17", "--scene-method", "cascade",
                 "--cascade-strengths", "0.5,0.5", "--out", str(tmp_path / "x.tif")])
    err = capsys.readouterr().err
    assert code != 0 and "give 3 strengths" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    body = dict(bbox=list(BBOX), crs=UTM, prompt="farmland", scene_method="cascade")
    job = GenerateJob(**body, cascade_strengths=[0.7, 0.6, 0.5], cascade_coarse_level=14)
    assert job.cascade_strengths == [0.7, 0.6, 0.5]
    for bad in (dict(cascade_strengths=[1.5]), dict(cascade_coarse_level=9),
                dict(scene_method="cascades")):
        with pytest.raises(ValidationError):
            GenerateJob(**{**body, **bad})


def test_low_frequency_seams_see_a_layout_step_at_a_window_border():
    from engine.bench.cascade import low_frequency_seams

    rng = np.random.default_rng(0)
    # 3 x 1 windows of 256 (overlap 64): 640 x 256 px; windows start at x = 192 and 384.
    texture = rng.normal(128, 20, (256, 640, 1)).repeat(3, axis=2)
    smooth = np.clip(texture + np.linspace(0, 40, 640)[None, :, None], 0, 255)
    assert low_frequency_seams(smooth, 256, 64) == pytest.approx(1.0, abs=0.35)
    stepped = smooth.copy()
    stepped[:, 384:] += 60  # the third window invented its own, brighter layout
    assert low_frequency_seams(np.clip(stepped, 0, 255), 256, 64) > 3


def test_cli_runs_a_cascade_and_its_progress_bar_counts_every_step(capsys, tiny_t2i,
                                                                   tmp_path):
    out = tmp_path / "cli.tif"
    code = main(["generate", "--bbox", ",".join(map(str, BBOX)), "--crs", UTM, "--prompt",
                 "farmland", "--level", "17", "--scene-method", "cascade", "--model",
                 str(tiny_t2i), "--device", "cpu", "--precision", "fp32", "--steps", "4",
                 "--seed", "2", "--cascade-strengths", "0.5,0.75,0.25", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    # 4 steps: the coarse window runs 4, then int(4 * s) per window: 2, 3 and 1 x 6 windows
    assert "9 windows" in err and "15/15" in err and "16/15" not in err, err
    with rasterio.open(out) as ds:
        assert ds.tags()["TEXT2EARTH_CASCADE_STRENGTHS"] == "0.5,0.75,0.25"
