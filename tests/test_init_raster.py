"""`generate --init-raster R --strength S`: R (any CRS, RGB or paletted) warped onto the output
grid, then image-to-image; bad input refused with one line and nothing written.

Where things land is checked against pyproj (the init's features projected by hand onto the
output's grid), not against the engine's own warp; strength 0 makes the output the warped
init itself (no model call), so positions and colours can be read off it exactly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from engine.errors import InputError
from engine.jobs.generate import GenerateRequest, generate, plan

ROOT = Path(__file__).resolve().parents[1]
LON0, LAT0, DEG = 10.0, 45.0, 0.00004  # the init raster: 100 x 100 px of 0.00004 degrees
SQUARE = (40, 60)  # the red square's rows/cols (from, to) in the init raster
RED, DARK = (250, 20, 20), (40, 60, 40)


def init_geotiff(path: Path, palette: bool = False) -> Path:
    """A lon/lat raster: dark background, a red square; paletted or RGB."""
    transform = Affine(DEG, 0, LON0, 0, -DEG, LAT0 + 100 * DEG)
    classes = np.zeros((100, 100), np.uint8)
    classes[SQUARE[0]:SQUARE[1], SQUARE[0]:SQUARE[1]] = 1
    profile = dict(driver="GTiff", width=100, height=100, crs="EPSG:4326",
                   transform=transform, dtype="uint8")
    if palette:
        with rasterio.open(path, "w", count=1, **profile) as dst:
            dst.write(classes, 1)
            dst.write_colormap(1, {0: (*DARK, 255), 1: (*RED, 255)})
    else:
        rgb = np.where(classes[None] == 1, np.array(RED)[:, None, None],
                       np.array(DARK)[:, None, None]).astype(np.uint8)
        with rasterio.open(path, "w", count=3, **profile) as dst:
            dst.write(rgb)
    return path


def extent_3857(margin_deg: float = 0.0008) -> tuple[float, float, float, float]:
    """A Web Mercator box inside the init raster's footprint."""
    to = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    x0, y0 = to.transform(LON0 + margin_deg, LAT0 + margin_deg)
    x1, y1 = to.transform(LON0 + 100 * DEG - margin_deg, LAT0 + 100 * DEG - margin_deg)
    return x0, y0, x1, y1


def request(tmp_path: Path, init: Path, **changes) -> GenerateRequest:
    fields = dict(bbox=extent_3857(), crs="EPSG:3857", prompt="fields", out=tmp_path / "o.tif",
                  level=16, steps=4, seed=3, tile=64, overlap=16, init_raster=init,
                  strength=0.0)
    fields.update(changes)
    return GenerateRequest(**fields)


def expected_square(ds) -> tuple[int, int]:
    """The (row, col) in the output of the red square's centre, by pyproj."""
    lon = LON0 + (SQUARE[0] + SQUARE[1]) / 2 * DEG
    lat = LAT0 + 100 * DEG - (SQUARE[0] + SQUARE[1]) / 2 * DEG
    x, y = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True).transform(lon, lat)
    col, row = ~ds.transform * (x, y)
    return int(row), int(col)


def refuse_models(model):
    pipe = model.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a model was called")

    return [m.register_forward_pre_hook(refuse) for m in (pipe.unet, pipe.vae)]


@pytest.mark.parametrize("palette", [False, True])
@pytest.mark.parametrize("tile", [256, 64])  # one canvas; a scene of windows
def test_strength_zero_puts_the_init_where_pyproj_says(tmp_path, t2i_model, palette, tile,
                                                      monkeypatch):
    from engine.jobs import init_image

    # scenes warp in strips, the fill colour from a decimated warp: small ones here
    monkeypatch.setattr(init_image, "WARP_ROWS", 37)
    monkeypatch.setattr(init_image, "MEAN_SIDE", 40)
    init = init_geotiff(tmp_path / "init.tif", palette)
    req = request(tmp_path, init, tile=tile)
    grid = plan(req)
    assert (grid.width > 64) and (grid.width <= 256 and grid.height <= 256)
    hooks = refuse_models(t2i_model)
    try:
        result = generate(req, t2i_model)
    finally:
        for h in hooks:
            h.remove()
    with rasterio.open(result.path) as ds:
        out = np.moveaxis(ds.read(), 0, 2)
        row, col = expected_square(ds)
        tags = ds.tags()
        assert ds.crs.to_epsg() == 3857
    assert tuple(out[row, col]) == RED
    assert tuple(out[2, 2]) == DARK and tuple(out[-3, -3]) == DARK
    # the square's size on the output: 20 init px of 0.00004 deg, measured by pyproj
    reds = np.all(out == RED, axis=2)
    to = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    width_m = to.transform(LON0 + 20 * DEG, LAT0)[0] - to.transform(LON0, LAT0)[0]
    assert reds[row].sum() == pytest.approx(width_m / grid.transform.a, abs=2)
    if palette:  # classes are warped by nearest: no blended colours
        assert np.all(reds | np.all(out == DARK, axis=2))
    assert tags["TEXT2EARTH_STRENGTH"] == "0" and tags["TEXT2EARTH_INIT_RASTER"] == "init.tif"
    assert float(tags["TEXT2EARTH_INIT_COVERAGE"]) == 1.0


@pytest.mark.parametrize("tile", [256, 64])
def test_where_the_init_does_not_reach_its_mean_colour_fills_in(tmp_path, t2i_model, tile,
                                                                monkeypatch):
    """The extent: the init's top rows (dark only) and as much again east of it."""
    from engine.jobs import init_image

    monkeypatch.setattr(init_image, "WARP_ROWS", 37)
    monkeypatch.setattr(init_image, "MEAN_SIDE", 40)
    init = init_geotiff(tmp_path / "init.tif")
    to = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    east = LON0 + 100 * DEG
    x0, y0 = to.transform(LON0 + 0.0008, LAT0 + 0.0026)
    x1, y1 = to.transform(east + (east - LON0 - 0.0008), LAT0 + 0.0038)
    result = generate(request(tmp_path, init, tile=tile, bbox=(x0, y0, x1, y1)), t2i_model)
    with rasterio.open(result.path) as ds:
        out = np.moveaxis(ds.read(), 0, 2)
        coverage = float(ds.tags()["TEXT2EARTH_INIT_COVERAGE"])
        # the init's east edge, by pyproj, in output columns
        edge = (~ds.transform * to.transform(east, LAT0 + 0.003))[0]
    assert np.all(out == DARK)
    assert coverage == pytest.approx(edge / out.shape[1], abs=0.02)
    assert coverage == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("tile", [256, 64])
def test_strength_changes_the_init_and_is_recorded(tmp_path, t2i_model, tile):
    init = init_geotiff(tmp_path / "init.tif")
    zero = generate(request(tmp_path, init, tile=tile, out=tmp_path / "zero.tif"), t2i_model)
    half = generate(request(tmp_path, init, tile=tile, out=tmp_path / "half.tif",
                            strength=0.5), t2i_model)
    with rasterio.open(zero.path) as a, rasterio.open(half.path) as b:
        assert (a.transform, a.width, a.height) == (b.transform, b.width, b.height)
        change = np.abs(a.read().astype(float) - b.read()).mean()
        tags = b.tags()
    assert change > 1
    assert tags["TEXT2EARTH_STRENGTH"] == "0.5" and tags["TEXT2EARTH_STRENGTH_STEPS"] == "2 of 4"
    if tile == 64:
        assert tags["TEXT2EARTH_SCENE_METHOD"].startswith("img2img windows")


def test_scene_with_the_inpainting_model(tmp_path, tiny_inpaint):
    from engine.model.checkpoint import load_model

    model = load_model(str(tiny_inpaint), "cpu", precision="fp32")
    init = init_geotiff(tmp_path / "init.tif")
    result = generate(request(tmp_path, init, strength=0.5), model)
    with rasterio.open(result.path) as ds:
        assert ds.tags()["TEXT2EARTH_SCENE_METHOD"] == "img2img windows (inpainting context)"
        assert ds.read().std() > 1


@pytest.mark.parametrize("strength", [-0.5, 1.5, float("nan")])
def test_strength_outside_0_1_is_refused(tmp_path, strength):
    init = init_geotiff(tmp_path / "init.tif")
    with pytest.raises(InputError, match="strength must be from 0"):
        plan(request(tmp_path, init, strength=strength))


def test_prompt_regions_with_an_init_raster_are_refused(tmp_path):
    init = init_geotiff(tmp_path / "init.tif")
    region = {"geometry": {"type": "Polygon", "coordinates": [[
        [10.0, 45.0], [10.002, 45.0], [10.002, 45.002], [10.0, 45.0]]]}, "prompt": "lake"}
    with pytest.raises(InputError, match="cannot be combined"):
        plan(request(tmp_path, init, regions=[region]))


def test_init_raster_that_does_not_overlap_is_refused(tmp_path):
    init = init_geotiff(tmp_path / "init.tif")
    to = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    x0, y0 = to.transform(11.0, 46.0)
    x1, y1 = to.transform(11.002, 46.002)
    with pytest.raises(InputError, match="does not overlap the extent"):
        plan(request(tmp_path, init, bbox=(x0, y0, x1, y1)))


def test_init_raster_without_crs_is_refused(tmp_path):
    no_crs = Path(__file__).resolve().parents[2] / "shared" / "data" / "rasters" / "rotated.tif"
    with pytest.raises(InputError, match="has no coordinate reference system"):
        plan(request(tmp_path, no_crs))


def test_all_nodata_init_raster_is_refused_and_nothing_written(tmp_path, t2i_model):
    init = tmp_path / "empty.tif"
    with rasterio.open(init_geotiff(tmp_path / "full.tif")) as src:
        with rasterio.open(init, "w", **dict(src.profile, nodata=0)) as dst:
            dst.write(np.zeros((3, 100, 100), np.uint8))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="holds no valid pixels"):
        generate(request(tmp_path, init, out=out / "o.tif"), t2i_model)
    assert not out.exists()


def test_cli_generate_with_init_raster(tmp_path, tiny_t2i):
    init = init_geotiff(tmp_path / "init.tif")
    cli = [sys.executable, "-m", "engine.cli", "generate", "--crs", "EPSG:3857", "--prompt",
           "fields", "--level", "16", "--steps", "2", "--model", str(tiny_t2i), "--quiet",
           "--init-raster", str(init)]
    bbox = ",".join(map(str, extent_3857()))
    done = subprocess.run([*cli, "--bbox", bbox, "--strength", "0.5", "--out",
                           str(tmp_path / "g.tif")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    with rasterio.open(tmp_path / "g.tif") as ds:
        assert ds.tags()["TEXT2EARTH_STRENGTH"] == "0.5"
    far = ",".join(map(str, (0, 0, 300, 300)))
    bad = subprocess.run([*cli, "--bbox", far, "--out", str(tmp_path / "b.tif")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.count("\n") == 1 and "does not overlap the extent" in bad.stderr
    assert not (tmp_path / "b.tif").exists()


def test_candidates_start_from_the_init_raster_too(tmp_path, t2i_model):
    """N variations of an init-raster scene: each candidate is the scene its own seed makes
    (compared with separate single runs), all kept without a rank model, each tagged."""
    init = init_geotiff(tmp_path / "init.tif")
    made = generate(request(tmp_path, init, strength=0.5, candidates=2,
                            out=tmp_path / "c.tif"), t2i_model)
    assert sorted(c.index for c in made.candidates) == [1, 2]
    assert made.path == tmp_path / "c.tif"
    for candidate in made.candidates:
        assert candidate.path is not None and Path(candidate.path).is_file()
        single = generate(request(tmp_path, init, strength=0.5, seed=candidate.seed,
                                  out=tmp_path / f"single{candidate.index}.tif"), t2i_model)
        with rasterio.open(candidate.path) as a, rasterio.open(single.path) as b:
            assert (a.transform, a.width, a.height) == (b.transform, b.width, b.height)
            assert np.array_equal(a.read(), b.read())
            assert a.tags()["TEXT2EARTH_STRENGTH"] == "0.5"
    seeds = {c.seed for c in made.candidates}
    assert len(seeds) == 2


@pytest.mark.parametrize("init", [True, False], ids=["init-raster", "joint"])
def test_candidate_scenes_count_their_windows_as_one_run(tmp_path, t2i_model, init):
    """Two candidate scenes report "tile k of 2n" throughout: the count never starts over, so
    the time left covers both (the service and the dock show these numbers)."""
    source = init_geotiff(tmp_path / "init.tif") if init else None
    seen: list[tuple[int, int]] = []

    def on_step(pipe, step, timestep, tensors):
        seen.append((tensors.get("tile", 1), tensors.get("tiles", 1)))
        return tensors

    made = generate(request(tmp_path, source, strength=0.5, candidates=2, steps=2,
                            out=tmp_path / "n.tif"), t2i_model, on_step)
    assert len(made.candidates) == 2
    tiles = {total for _, total in seen}
    assert len(tiles) == 1, tiles
    total = tiles.pop()
    assert total % 2 == 0, total
    numbers = [tile for tile, _ in seen]
    assert numbers == sorted(numbers)  # never starts over
    assert max(numbers) == total and min(numbers) == 1
