"""Unbounded scenes: window planning, outpainting / joint denoising, resume, memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch

from engine.errors import GenerationCancelled, InputError
from engine.geo.grid import LevelRequest, build_grid
from engine.geo.tiling import outpaint_blend, outpaint_mask, plan_scene, tile_seed
from engine.jobs.generate import GenerateRequest, generate, scene_plan
from engine.scenes.state import scene_files

UTM = "EPSG:32632"
# 400 x 300 m at level 17 (~0.786 m/px): 509 x 382 px, 3 x 2 windows of 256 px with 64 overlap
BBOX = (447000.0, 5411000.0, 447400.0, 5411300.0)


@pytest.fixture(scope="module")
def inpaint_model(tiny_inpaint):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_inpaint), "cpu", precision="fp32")


def request(tmp_path, name, **kw):
    fields = dict(bbox=BBOX, crs=UTM, prompt="farmland", out=tmp_path / name, level=17, seed=3,
                  steps=2, tile=256, overlap=64)
    fields.update(kw)
    return GenerateRequest(**fields)


def read(path):
    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read(), 0, 2), ds.transform, ds.crs, ds.tags()


@pytest.mark.parametrize("width,height,tile,overlap", [
    (1, 1, 256, 64), (256, 256, 256, 64), (257, 300, 256, 64), (1000, 333, 256, 64),
    (5000, 64, 512, 128), (777, 1234, 512, 0), (4096, 4096, 512, 256),
])
def test_windows_cover_every_pixel_and_cores_partition_the_canvas(width, height, tile, overlap):
    plan = plan_scene(width, height, tile, overlap)
    windows = plan.windows()
    assert len(windows) == plan.nx * plan.ny
    assert plan.canvas_width >= width and plan.canvas_height >= height
    coverage = np.zeros((plan.canvas_height, plan.canvas_width), np.int32)
    cores = np.zeros_like(coverage)
    for w in windows:
        assert w.size == tile and w.col % 8 == 0 and w.row % 8 == 0
        assert w.col + tile <= plan.canvas_width and w.row + tile <= plan.canvas_height
        coverage[w.row : w.row + tile, w.col : w.col + tile] += 1
        c0, r0, c1, r1 = plan.core(w)
        cores[r0:r1, c0:c1] += 1
    col, row = plan.offset
    assert (coverage[row : row + height, col : col + width] >= 1).all()
    assert (cores == 1).all()  # every canvas pixel decoded by exactly one window
    if plan.nx > 1:  # neighbours share exactly `overlap` columns
        assert windows[1].col - windows[0].col == tile - overlap
    # the canvas wastes less than one stride per side
    assert plan.canvas_width - width < tile and plan.canvas_height - height < tile


def test_bad_tiling_options_are_refused():
    for tile, overlap in ((250, 64), (256, 60), (256, 200), (32, 0)):
        with pytest.raises(ValueError):
            plan_scene(1000, 1000, tile, overlap)


def test_tile_seeds_are_deterministic_and_distinct():
    seeds = {tile_seed(7, ix, iy) for ix in range(20) for iy in range(20)}
    assert len(seeds) == 400
    assert tile_seed(7, 3, 4) == tile_seed(7, 3, 4) != tile_seed(8, 3, 4)
    assert all(0 <= s < 2**32 for s in seeds)


def test_masks_and_blend_weights():
    plan = plan_scene(600, 600, 256, 64)
    first, right, below = plan.windows()[0], plan.windows()[1], plan.windows()[plan.nx]
    assert outpaint_mask(plan, first).min() == 1  # nothing known yet
    m = outpaint_mask(plan, right)
    assert (m[:, :64] == 0).all() and (m[:, 64:] == 1).all()
    m = outpaint_mask(plan, below)
    assert (m[:64, :] == 0).all() and (m[64:, :] == 1).all()
    b = outpaint_blend(plan, right)
    assert 0 < b[0, 0] < 0.05 and b[0, 63] > 0.95 and (b[:, 64:] == 1).all()
    assert (np.diff(b[10, :64]) > 0).all()  # a ramp, no step


def test_outpainted_scene_lands_on_the_grid_and_starts_with_a_plain_window(
        tmp_path, inpaint_model):
    req = request(tmp_path, "scene.tif")
    grid = build_grid(BBOX, UTM, LevelRequest(level=17))
    plan = scene_plan(req, grid)
    assert (plan.nx, plan.ny) == (3, 2)
    result = generate(req, inpaint_model)
    pixels, transform, crs, tags = read(result.path)
    # The same grid as any single-canvas output of this extent: bounds, size, CRS.
    assert transform == grid.transform and pixels.shape == (grid.height, grid.width, 3)
    assert crs.to_epsg() == 32632
    assert tags["TEXT2EARTH_SCENE_METHOD"] == "outpaint"
    assert tags["TEXT2EARTH_WINDOWS"] == "3x2"
    # The first window is a plain generation (everything masked) with its own tile seed.
    pipe = inpaint_model.pipeline
    pipe.use_scheduler("euler")
    alone = pipe("farmland", np.zeros((256, 256, 3), np.uint8), np.ones((256, 256), np.float32),
                 level=17, num_inference_steps=2, guidance_scale=req.guidance,
                 generator=torch.Generator("cpu").manual_seed(tile_seed(3, 0, 0))).images[0]
    col, row = plan.offset
    only_first = alone[row : 192, col : 192]  # left of and above every other window
    np.testing.assert_array_equal(pixels[: only_first.shape[0], : only_first.shape[1]],
                                  only_first)
    # No scratch left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_same_request_same_scene(tmp_path, inpaint_model):
    a = read(generate(request(tmp_path, "a.tif"), inpaint_model).path)[0]
    b = read(generate(request(tmp_path, "b.tif"), inpaint_model).path)[0]
    c = read(generate(request(tmp_path, "c.tif", seed=4), inpaint_model).path)[0]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).max() > 0


class CrashError(Exception):
    pass


def test_resumed_scene_equals_uninterrupted(tmp_path, inpaint_model):
    whole = read(generate(request(tmp_path, "whole.tif"), inpaint_model).path)[0]
    out = tmp_path / "resumed.tif"
    calls = []

    def crash_in_window_4(pipe, step, t, tensors):
        calls.append(tensors["tile"])
        if tensors["tile"] == 4:
            raise CrashError()
        return tensors

    with pytest.raises(CrashError):
        generate(request(tmp_path, "resumed.tif"), inpaint_model, crash_in_window_4)
    [names] = scene_files(out)
    scratch, state = names.scratch, names.state
    assert scratch.exists() and not out.exists()
    # Windows 3 (2,0) and 4 (0,1) do not touch: they form one wavefront, run in one batch,
    # and stop together (engine.scenes.window_batch).
    assert json.loads(state.read_text())["done"] == ["0,0", "1,0"]

    resumed_tiles = []

    def record(pipe, step, t, tensors):
        resumed_tiles.append(tensors["tile"])
        return tensors

    generate(request(tmp_path, "resumed.tif"), inpaint_model, record)
    assert min(resumed_tiles) == 3  # windows 1-2 were not generated again
    np.testing.assert_array_equal(read(out)[0], whole)
    assert not scratch.exists() and not state.exists()


def test_changed_request_does_not_resume_and_cancel_discards(tmp_path, inpaint_model):
    out = tmp_path / "s.tif"

    def crash(pipe, step, t, tensors):
        if tensors["tile"] == 2:
            raise CrashError()
        return tensors

    with pytest.raises(CrashError):
        generate(request(tmp_path, "s.tif"), inpaint_model, crash)
    seen = []
    generate(request(tmp_path, "s.tif", seed=9), inpaint_model,
             lambda p, s, t, x: seen.append(x["tile"]) or x)
    assert min(seen) == 1  # another seed: the stale scratch is not reused
    fresh = read(generate(request(tmp_path, "fresh.tif", seed=9), inpaint_model).path)[0]
    np.testing.assert_array_equal(read(out)[0], fresh)

    def cancel(pipe, step, t, tensors):
        if tensors["tile"] == 2:
            pipe.cancel()
        return tensors

    with pytest.raises(GenerationCancelled):
        generate(request(tmp_path, "c.tif"), inpaint_model, cancel)
    assert not any(p.name.startswith(".c.tif") for p in tmp_path.iterdir())
    assert not (tmp_path / "c.tif").exists()


def test_joint_denoising_with_the_text_to_image_model(tmp_path, t2i_model, inpaint_model):
    req = request(tmp_path, "joint.tif", scheduler="ddim")
    steps = []
    result = generate(req, t2i_model, lambda p, s, t, x: steps.append(s) or x)
    pixels, transform, _, tags = read(result.path)
    assert tags["TEXT2EARTH_SCENE_METHOD"] == "joint"
    assert steps == [0, 1]  # one denoising pass over the whole canvas
    assert pixels.std() > 1
    again = read(generate(request(tmp_path, "joint2.tif", scheduler="ddim"), t2i_model).path)[0]
    np.testing.assert_array_equal(pixels, again)
    with pytest.raises(InputError, match="inpainting"):
        generate(request(tmp_path, "x.tif", scene_method="outpaint"), t2i_model)


MEMORY_PROBE = """
import sys
from pathlib import Path
from engine.model.checkpoint import load_model
from engine.jobs.generate import GenerateRequest, generate
from engine.bench.memory import peak_growth

import engine.scenes.run as scene_run

# The store's GDAL block cache is a fixed 64 MiB, which a 16x scene's scratch can fill and a
# 2x2 one cannot: capped here so what is compared is growth with the scene, not the cache.
scene_run.STORE_CACHE_BYTES = 4 << 20
model = load_model(sys.argv[1], "cpu", precision="fp32")
side = float(sys.argv[2])
x0, y0 = 447000.0, 5411000.0
request = GenerateRequest(bbox=(x0, y0, x0 + side, y0 + side), crs="EPSG:32632", prompt="x",
    out=Path(sys.argv[3]), level=17, seed=1, steps=1, guidance=1.0, tile=256, overlap=64,
    window_batch=1)  # one window per call in both: a 2x2 scene's wavefronts hold one window
# each, a big scene's several, so any larger cap would compare different batch sizes
print(peak_growth(lambda: generate(request, model))[1])
"""


def test_peak_memory_stays_flat_for_a_16x_larger_scene(tmp_path, tiny_inpaint):
    """Coarse bound on resident memory (the precise figures are in make bench)."""
    peaks = []
    for side, name in ((400.0, "small.tif"), (1600.0, "big.tif")):  # 16x the area
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(tiny_inpaint), str(side),
             str(tmp_path / name)], capture_output=True, text=True, timeout=600,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        peaks.append(int(out.stdout.strip().splitlines()[-1]))
    with rasterio.open(tmp_path / "big.tif") as ds:
        big_pixels = ds.width * ds.height
    with rasterio.open(tmp_path / "small.tif") as ds:
        assert big_pixels > 15 * ds.width * ds.height  # it really was ~16x the pixels
    # Growth of resident memory during generation, in bytes: the 16x larger scene may not
    # need more than half of one float32 RGB copy of itself (12 bytes a pixel) beyond the
    # small one.
    assert peaks[1] - peaks[0] < 12 * big_pixels / 2, peaks


def test_seam_metric_sees_a_seam_and_not_a_smooth_image():
    from engine.bench.seam_metric import seam_ratio

    height, width, tile, overlap = 600, 800, 256, 64
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([(xx * 0.2 + yy * 0.1) % 255] * 3, axis=2).astype(np.uint8)
    noisy = smooth.astype(float) + np.random.default_rng(0).normal(0, 3, smooth.shape)
    assert seam_ratio(np.clip(noisy, 0, 255).astype(np.uint8), tile, overlap)["ratio"] == \
        pytest.approx(1.0, abs=0.15)
    seamed = noisy.copy()
    plan = plan_scene(width, height, tile, overlap)
    col = plan.stride - plan.offset[0]  # where the second column of windows starts
    seamed[:, col:] += 25  # a brightness jump at a window border
    result = seam_ratio(np.clip(seamed, 0, 255).astype(np.uint8), tile, overlap)
    assert result["ratio"] > 1.5 and result["border_lines"] >= 2


def utm_box(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1],
                                                [x0, y0]]]}


def test_prompt_regions_choose_each_windows_prompt(tmp_path, inpaint_model):
    split = 447150.0  # a north-south line through the scene
    regions = [{"geometry": utm_box(446000, 5410000, split, 5412000), "prompt": "a river"},
               {"geometry": utm_box(split, 5410000, 448000, 5412000), "prompt": "farmland"}]
    req = request(tmp_path, "regions.tif", regions=regions, regions_crs=UTM, prompt="default")
    pipe = inpaint_model.pipeline
    used = []
    original = pipe.encode_prompt

    def spy(prompt, *args, **kwargs):
        used.append(prompt)
        return original(prompt, *args, **kwargs)

    pipe.encode_prompt = spy
    try:
        result = generate(req, inpaint_model)
    finally:
        pipe.encode_prompt = original
    grid = result.grid
    plan = scene_plan(req, grid)
    col, _ = plan.offset
    expected = []
    for w in plan.windows():  # a half-plane split: the window's centre decides its majority
        centre_x = grid.transform.c + (w.col - col + w.size / 2) * grid.transform.a
        expected.append("a river" if centre_x < split else "farmland")
    assert used == expected and set(used) == {"a river", "farmland"}
    assert json.loads(read(result.path)[3]["TEXT2EARTH_PROMPT_REGIONS"]) == ["a river",
                                                                             "farmland"]


def test_regions_in_geojson_lon_lat_and_bad_regions(tmp_path):
    from pyproj import CRS

    from engine.geo.regions import parse_regions, read_regions_file

    path = tmp_path / "regions.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"prompt": "lake"},
         "geometry": {"type": "Polygon", "coordinates": [[[8.27, 48.84], [8.29, 48.84],
                                                          [8.29, 48.86], [8.27, 48.84]]]}}]}))
    items, crs = read_regions_file(path)
    assert crs == "EPSG:4326" and items[0]["prompt"] == "lake"
    region = parse_regions(items, crs, CRS.from_epsg(32632))[0]
    x, y = region.geometry["coordinates"][0][0]
    from pyproj import Transformer

    ex, ey = Transformer.from_crs(4326, 32632, always_xy=True).transform(8.27, 48.84)
    assert (x, y) == pytest.approx((ex, ey), abs=0.01)
    with pytest.raises(InputError, match="prompt"):
        parse_regions([{"geometry": items[0]["geometry"], "prompt": ""}], crs,
                      CRS.from_epsg(32632))
    with pytest.raises(InputError, match="Polygon"):
        parse_regions([{"geometry": {"type": "Point", "coordinates": [8, 48]}, "prompt": "x"}],
                      crs, CRS.from_epsg(32632))


def test_rerun_without_a_seed_resumes_with_the_stopped_runs_seed(tmp_path, inpaint_model):
    def crash(pipe, step, t, tensors):
        if tensors["tile"] == 3:
            raise CrashError()
        return tensors

    with pytest.raises(CrashError):
        generate(request(tmp_path, "noseed.tif", seed=None), inpaint_model, crash)
    [names] = scene_files(tmp_path / "noseed.tif")
    state = names.state
    seed = json.loads(state.read_text())["seed"]
    tiles = []
    result = generate(request(tmp_path, "noseed.tif", seed=None), inpaint_model,
                      lambda p, s, t, x: tiles.append(x["tile"]) or x)
    assert result.seed == seed and min(tiles) == 3  # resumed, not restarted
    whole = generate(request(tmp_path, "whole.tif", seed=seed), inpaint_model)
    np.testing.assert_array_equal(read(result.path)[0], read(whole.path)[0])


def test_failed_scene_without_resume_leaves_no_scratch(tmp_path, inpaint_model, t2i_model):
    def crash(pipe, step, t, tensors):
        raise CrashError()

    for model, name in ((inpaint_model, "a.tif"), (t2i_model, "b.tif")):
        with pytest.raises(CrashError):
            generate(request(tmp_path, name, resume=False), model, crash)
    with pytest.raises(CrashError):  # joint denoising records no windows: nothing to resume
        generate(request(tmp_path, "c.tif", scheduler="ddim"), t2i_model, crash)
    assert list(tmp_path.iterdir()) == []


def test_default_window_is_the_training_size_everywhere():
    """256 px, the size the authors trained at and publish every example at; larger windows
    are an option (untested with the real weights), never the default."""
    from engine.cli import build_parser
    from engine.jobs.edit.request import EditRequest
    from engine.service.schemas import EditJob, GenerateJob
    from text2earth_qgis.core.job_spec import window_count

    fields = GenerateRequest.__dataclass_fields__
    assert (fields["tile"].default, fields["overlap"].default) == (256, 64)
    fields = EditRequest.__dataclass_fields__
    assert (fields["tile"].default, fields["overlap"].default) == (256, 64)
    for body in (GenerateJob, EditJob):
        props = body.model_json_schema()["properties"]
        assert (props["tile"]["default"], props["overlap"]["default"]) == (256, 64)
    parser = build_parser()
    for command in ("generate", "edit", "extend"):
        sub = parser._subparsers._group_actions[0].choices[command]
        defaults = {a.dest: a.default for a in sub._actions}
        assert (defaults["tile"], defaults["overlap"]) == (256, 64)
    plan = plan_scene(300, 300)  # more than one window's worth: 2 x 2 windows of 256
    assert (plan.tile, plan.overlap, plan.nx, plan.ny) == (256, 64, 2, 2)
    assert window_count(300, 300) == 4  # the plugin shows the engine's count


def test_joint_denoising_cancels_through_the_pipelines_own_mechanism(tmp_path, t2i_model):
    """cancel() from the step callback stops joint denoising after that step, as it stops a
    single image; the next run starts afresh (the pipeline forgets the cancel)."""
    steps = []

    def cancel_at_first_step(pipe, step, t, tensors):
        steps.append(step)
        pipe.cancel()
        return tensors

    with pytest.raises(GenerationCancelled, match="step 1 of 2"):
        generate(request(tmp_path, "j.tif", scheduler="ddim"), t2i_model, cancel_at_first_step)
    assert steps == [0] and not (tmp_path / "j.tif").exists()
    again = generate(request(tmp_path, "j.tif", scheduler="ddim"), t2i_model)
    assert read(again.path)[0].std() > 1


def predict_noise_calls(model, run, monkeypatch) -> tuple[list[int], int]:
    """(batch size of every predict_noise call, number of UNet calls) while ``run`` runs."""
    pipe = model.pipeline
    calls, unet_calls = [], []
    original = type(pipe).predict_noise

    def spy(self, latents, *args, **kwargs):
        calls.append(latents.shape[0])
        return original(self, latents, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "predict_noise", spy)
    hook = pipe.unet.register_forward_pre_hook(lambda m, a: unet_calls.append(1))
    try:
        run()
    finally:
        hook.remove()
        monkeypatch.undo()
    return calls, len(unet_calls)


def test_every_model_call_goes_through_predict_noise(tmp_path, t2i_model, inpaint_model,
                                                     monkeypatch):
    """One home for the guided UNet call: single images, outpainted scenes and joint
    denoising all call the pipeline's predict_noise, once per UNet call."""
    small = (447000.0, 5411000.0, 447100.0, 5411100.0)  # 127 px: one canvas
    runs = {
        "single": (t2i_model, lambda: generate(request(tmp_path, "1.tif", bbox=small),
                                               t2i_model)),
        "joint": (t2i_model, lambda: generate(
            request(tmp_path, "2.tif", scheduler="ddim", window_batch=1), t2i_model)),
        "outpaint": (inpaint_model, lambda: generate(
            request(tmp_path, "3.tif", window_batch=1), inpaint_model)),
    }
    expected = {"single": 2, "joint": 6 * 2, "outpaint": 6 * 2}  # 2 steps; 3 x 2 windows
    for name, (model, run) in runs.items():
        calls, unet_calls = predict_noise_calls(model, run, monkeypatch)
        assert calls == [1] * expected[name] and unet_calls == expected[name], name
