"""Editing and extending real rasters: the grid and metadata are kept, pixels outside the
(grown) mask are bit-identical, pixels inside change, the source file is never written.

References are independent of the engine: rasterio's rasterize and numpy shifts for the
mask, pyproj for coordinates and ground distances, the source file's own bytes and profile.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import SHARED_RASTERS
from pyproj import Geod, Transformer
from rasterio.enums import ColorInterp
from rasterio.features import rasterize

from engine.errors import GenerationCancelled, InputError
from engine.jobs.edit import EditRequest, ExtendRequest, edit_raster, extend_raster

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(steps=1, tile=64, overlap=16, seed=7)
UTM18, MERCATOR = "EPSG:32618", "EPSG:3857"


@pytest.fixture(scope="module")
def inpaint_model(tiny_inpaint):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_inpaint), "cpu", precision="fp32")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def box(x0, y0, x1, y1) -> dict:
    return {"type": "Polygon",
            "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def valid_spot(path: Path, side: int) -> tuple[int, int]:
    """Top-left (col, row) of a side x side block where every pixel holds data (from GDAL's
    own masks), nearest the raster's centre."""
    with rasterio.open(path) as ds:
        valid = ds.dataset_mask() > 0
    h, w = valid.shape
    integral = np.pad(valid.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    full = (integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side]
            + integral[:-side, :-side]) == side * side
    rows, cols = np.nonzero(full)
    best = np.argmin((rows - h / 2) ** 2 + (cols - w / 2) ** 2)
    return int(cols[best]), int(rows[best])


def pixel_polygon(ds, col, row, side) -> dict:
    """A square polygon in the raster's CRS, a little inside the pixel block."""
    x0, y0 = ds.transform * (col + 0.5, row + 0.5)
    x1, y1 = ds.transform * (col + side - 0.5, row + side - 0.5)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def grown_reference(geom: dict, ds, grow: int) -> np.ndarray:
    """Pixels allowed to change: the polygon's pixels (all touched), grown by ``grow`` px
    with plain numpy shifts (a square neighbourhood)."""
    burnt = rasterize([(geom, 1)], out_shape=ds.shape, transform=ds.transform,
                      all_touched=True, dtype="uint8").astype(bool)
    out = burnt.copy()
    for dy in range(-grow, grow + 1):
        for dx in range(-grow, grow + 1):
            shifted = np.zeros_like(burnt)
            ys = slice(max(dy, 0), burnt.shape[0] + min(dy, 0))
            xs = slice(max(dx, 0), burnt.shape[1] + min(dx, 0))
            yd = slice(max(-dy, 0), burnt.shape[0] + min(-dy, 0))
            xd = slice(max(-dx, 0), burnt.shape[1] + min(-dx, 0))
            shifted[yd, xd] = burnt[ys, xs]
            out |= shifted
    return out


def assert_same_grid_and_metadata(src_path: Path, out_path: Path) -> None:
    with rasterio.open(src_path) as a, rasterio.open(out_path) as b:
        assert b.crs == a.crs
        assert b.transform == a.transform
        assert (b.width, b.height, b.count) == (a.width, a.height, a.count)
        assert b.dtypes == a.dtypes
        assert b.colorinterp == a.colorinterp
        assert (b.nodata == a.nodata) or (np.isnan(a.nodata) and np.isnan(b.nodata))
        if a.compression is not None and a.compression.value.lower() != "jpeg":
            assert b.compression == a.compression
        tags = b.tags()
        assert tags["TEXT2EARTH_SYNTHETIC"].startswith("partly")
        assert "compositeWithTrainedAlgorithmicMedia" in tags["DIGITAL_SOURCE_TYPE"]


CASES = [  # name, side of the masked block in px
    ("RGB.byte.tif", 14),  # UTM 18N, uint8 RGB, nodata 0 around the footprint
    ("RGBA.uint16.tif", 16),  # UTM 12N, uint16 BGR + alpha, deflate
    ("alpha.tif", 10),  # Web Mercator RGBA, JPEG-compressed (lossy: output is lossless)
    ("shade.tif", 12),  # Web Mercator, one gray band, nodata 255
]


@pytest.mark.parametrize("name,side", CASES)
def test_edit_keeps_grid_and_everything_outside_the_mask(tmp_path, inpaint_model, name, side):
    src_path = SHARED_RASTERS / name
    before = sha256(src_path)
    col, row = valid_spot(src_path, side + 12)
    col, row = col + 6, row + 6
    with rasterio.open(src_path) as ds:
        geom = pixel_polygon(ds, col, row, side)
        allowed = grown_reference(geom, ds, 4)
        inside = rasterize([(geom, 1)], out_shape=ds.shape, transform=ds.transform,
                           all_touched=False, dtype="uint8").astype(bool)
        src = ds.read()
        to_lonlat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
    # Sent as GeoJSON in lon/lat (the default CRS of GeoJSON): the engine reprojects it.
    ring = [list(to_lonlat.transform(x, y)) for x, y in geom["coordinates"][0]]
    lonlat = {"type": "Polygon", "coordinates": [ring]}
    out = tmp_path / f"edited-{name}"
    result = edit_raster(EditRequest(raster=src_path, mask=lonlat, prompt="a lake",
                                     out=out, **FAST), inpaint_model)
    assert result.path == out
    assert sha256(src_path) == before  # the source is never written
    assert_same_grid_and_metadata(src_path, out)
    with rasterio.open(out) as ds:
        edited = ds.read()
        tags = ds.tags()
    changed = np.any(edited != src, axis=0)
    # Reprojection can move an edge by a hair: allow one more pixel of growth.
    with rasterio.open(src_path) as ds:
        allowed = grown_reference(lonlat_to_raster(lonlat, ds), ds, 5)
    assert not changed[~allowed].any(), "a pixel outside the grown mask changed"
    assert changed[inside].mean() > 0.5, "the masked pixels were not regenerated"
    assert json.loads(tags["TEXT2EARTH_BAND_MAPPING"])["bands"]


def lonlat_to_raster(geom: dict, ds) -> dict:
    to_raster = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True)
    return {"type": "Polygon",
            "coordinates": [[list(to_raster.transform(x, y)) for x, y in geom["coordinates"][0]]]}


def test_uint16_bgr_bands_are_mapped_back_into_the_source_range(tmp_path, inpaint_model):
    """A 12-bit-style BGR + alpha uint16 raster (RGBA.uint16.tif's bands are constant, so one
    is made here from RGB.byte.tif): new values land inside the source's value range."""
    path = tmp_path / "bgra16.tif"
    with rasterio.open(SHARED_RASTERS / "RGB.byte.tif") as ds:
        rgb = ds.read().astype(np.uint16) * 16 + 100
        alpha = np.where(ds.dataset_mask() > 0, 4095, 0).astype(np.uint16)
        profile = dict(ds.profile, dtype="uint16", count=4, nodata=None, compress="lzw")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack([rgb[2], rgb[1], rgb[0], alpha]))
        dst.colorinterp = (ColorInterp.blue, ColorInterp.green, ColorInterp.red,
                           ColorInterp.alpha)
    col, row = valid_spot(path, 30)
    with rasterio.open(path) as ds:
        geom = pixel_polygon(ds, col + 5, row + 5, 20)
        src = ds.read()
        inside = rasterize([(geom, 1)], out_shape=ds.shape, transform=ds.transform,
                           dtype="uint8").astype(bool)
    out = tmp_path / "u16.tif"
    edit_raster(EditRequest(raster=path, mask=geom, mask_crs="EPSG:32618", prompt="sand",
                            out=out, **FAST), inpaint_model)
    assert_same_grid_and_metadata(path, out)
    with rasterio.open(out) as ds:
        edited = ds.read()
        mapping = json.loads(ds.tags()["TEXT2EARTH_BAND_MAPPING"])
    # Colour interpretation says blue, green, red, alpha: R, G, B are bands 3, 2, 1.
    assert mapping["bands"] == [3, 2, 1]
    for k, band in enumerate(mapping["bands"]):
        data = src[band - 1][alpha_of(src) > 0].astype(float)
        low, high = np.percentile(data, [0.5, 99.5])
        assert abs(mapping["low"][k] - low) <= 16 and abs(mapping["high"][k] - high) <= 16
        new = edited[band - 1][inside].astype(float)
        assert data.min() <= new.min() and new.max() <= data.max()
        assert np.any(edited[band - 1][inside] != src[band - 1][inside])
    assert (edited[3][inside] == 4095).all()  # alpha of opaque pixels is kept


def alpha_of(data: np.ndarray) -> np.ndarray:
    return data[3]


def test_nodata_is_kept_unless_filling_is_asked_for(tmp_path, inpaint_model):
    """RGB.byte.tif's footprint is a rotated square in a nodata (0) frame: a mask across its
    edge regenerates the data side only, unless nodata is to be filled."""
    src_path = SHARED_RASTERS / "RGB.byte.tif"
    with rasterio.open(src_path) as ds:
        valid = ds.dataset_mask() > 0
        src = ds.read()
        row = ds.height // 2
        col = int(np.argmax(valid[row]))  # the footprint's left edge on the middle row
        geom = pixel_polygon(ds, col - 10, row - 10, 20)
        inside = rasterize([(geom, 1)], out_shape=ds.shape, transform=ds.transform,
                           dtype="uint8").astype(bool)
    kept = tmp_path / "kept.tif"
    edit_raster(EditRequest(raster=src_path, mask=geom, mask_crs=UTM18, prompt="water",
                            out=kept, **FAST), inpaint_model)
    with rasterio.open(kept) as ds:
        data = ds.read()
        assert (data[:, ~valid] == 0).all()  # nodata stays nodata
        assert np.any(data != src, axis=0)[inside & valid].mean() > 0.5
    filled = tmp_path / "filled.tif"
    edit_raster(EditRequest(raster=src_path, mask=geom, mask_crs=UTM18, prompt="water",
                            out=filled, fill_nodata=True, **FAST), inpaint_model)
    with rasterio.open(filled) as ds:
        new_valid = ds.dataset_mask() > 0
    assert new_valid[inside & ~valid].all()  # generated pixels never land on nodata (0)


def test_masks_from_wkt_geojson_file_and_geopackage_are_the_same_edit(tmp_path, inpaint_model):
    import pyogrio

    src_path = SHARED_RASTERS / "RGB.byte.tif"
    col, row = valid_spot(src_path, 30)
    with rasterio.open(src_path) as ds:
        geom = pixel_polygon(ds, col + 5, row + 5, 18)
    (x0, y0), (x1, _), (_, y1) = geom["coordinates"][0][0], geom["coordinates"][0][1], \
        geom["coordinates"][0][2]
    wkt = f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"
    geojson = tmp_path / "mask.geojson"
    geojson.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32618"}},
        "features": [{"type": "Feature", "properties": {}, "geometry": geom}]}))
    gpkg = tmp_path / "mask.gpkg"
    shapely = pytest.importorskip("shapely")
    pyogrio.raw.write(gpkg, geometry=np.array([shapely.to_wkb(shapely.from_wkt(wkt))],
                                              dtype=object),
                      field_data=[], fields=[], crs="EPSG:32618", driver="GPKG",
                      geometry_type="Polygon")
    outputs = []
    for name, mask in (("wkt", wkt), ("geojson", str(geojson)), ("gpkg", str(gpkg))):
        out = tmp_path / f"{name}.tif"
        edit_raster(EditRequest(raster=src_path, mask=mask, prompt="a park", out=out, **FAST),
                    inpaint_model)
        with rasterio.open(out) as ds:
            outputs.append(ds.read())
    assert (outputs[0] == outputs[1]).all() and (outputs[0] == outputs[2]).all()


def test_mask_larger_than_a_window_is_done_window_by_window(tmp_path, inpaint_model):
    src_path = SHARED_RASTERS / "shade.tif"  # mostly nodata: filled here
    with rasterio.open(src_path) as ds:
        geom = pixel_polygon(ds, 400, 400, 120)
        src = ds.read()
        allowed = grown_reference(geom, ds, 4)
        inside = rasterize([(geom, 1)], out_shape=ds.shape, transform=ds.transform,
                           dtype="uint8").astype(bool)
    out = tmp_path / "big.tif"
    steps = []
    edit_raster(EditRequest(raster=src_path, mask=geom, mask_crs=MERCATOR, prompt="fields",
                            out=out, fill_nodata=True, **FAST),
                inpaint_model, lambda p, i, t, tensors: steps.append(tensors["tiles"]) or tensors)
    with rasterio.open(out) as ds:
        edited, tags = ds.read(), ds.tags()
    assert int(tags["TEXT2EARTH_WINDOWS"]) > 4 and steps[0] == int(tags["TEXT2EARTH_WINDOWS"])
    changed = np.any(edited != src, axis=0)
    assert not changed[~allowed].any()
    assert changed[inside].mean() > 0.9


def test_rotated_raster_with_a_crs_is_edited_on_its_own_grid(tmp_path, inpaint_model):
    """rotated.tif has a rotated geotransform (and no CRS: one is assigned to a copy)."""
    path = tmp_path / "rotated.tif"
    shutil.copy(SHARED_RASTERS / "rotated.tif", path)
    with rasterio.open(path, "r+") as ds:
        ds.crs = "EPSG:32618"
        assert not ds.transform.is_rectilinear
        geom = pixel_polygon(ds, 3, 5, 4)
        src = ds.read()
        allowed = grown_reference(geom, ds, 2)
    out = tmp_path / "rotated-edited.tif"
    edit_raster(EditRequest(raster=path, mask=geom, mask_crs=UTM18, prompt="roofs", out=out,
                            dilate=2, feather=1, **FAST), inpaint_model)
    assert_same_grid_and_metadata(path, out)
    with rasterio.open(out) as ds:
        changed = np.any(ds.read() != src, axis=0)
    assert not changed[~allowed].any() and changed.any()


def test_geographic_raster(tmp_path, inpaint_model):
    """A lon/lat raster (made here with rasterio's warp): its degrees are not square on the
    ground, the model's pixels are, and the output stays on the lon/lat grid."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    path = tmp_path / "lonlat.tif"
    with rasterio.open(SHARED_RASTERS / "RGB.byte.tif") as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        profile = dict(src.profile, crs="EPSG:4326", transform=transform, width=width,
                       height=height)
        with rasterio.open(path, "w", **profile) as dst:
            for b in (1, 2, 3):
                reproject(rasterio.band(src, b), rasterio.band(dst, b),
                          resampling=Resampling.nearest)
    col, row = valid_spot(path, 30)
    with rasterio.open(path) as ds:
        geom = pixel_polygon(ds, col + 5, row + 5, 16)
        src = ds.read()
        allowed = grown_reference(geom, ds, 4)
    out = tmp_path / "lonlat-edited.tif"
    result = edit_raster(EditRequest(raster=path, mask=geom, mask_crs="EPSG:4326",
                                     prompt="forest", out=out, **FAST), inpaint_model)
    assert_same_grid_and_metadata(path, out)
    assert result.level == 10  # ~300 m pixels: coarser than any level, clamped
    with rasterio.open(out) as ds:
        changed = np.any(ds.read() != src, axis=0)
    assert not changed[~allowed].any() and changed.any()


@pytest.fixture(scope="module")
def small_raster(tmp_path_factory) -> Path:
    """96 x 80 px of shade.tif (Web Mercator, gray, nodata 255), cut out with rasterio."""
    path = tmp_path_factory.mktemp("small") / "small.tif"
    with rasterio.open(SHARED_RASTERS / "shade.tif") as src:
        window = rasterio.windows.Window(380, 380, 96, 80)
        profile = dict(src.profile, width=96, height=80,
                       transform=src.window_transform(window), blockxsize=16, blockysize=16)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return path


@pytest.mark.parametrize("side", ["east", "west", "north", "south", "all"])
def test_extend_grows_the_grid_and_keeps_the_source(tmp_path, inpaint_model, small_raster,
                                                    side):
    out = tmp_path / f"extended-{side}.tif"
    n = 24
    result = extend_raster(ExtendRequest(raster=small_raster, by=f"{n}px", side=side,
                                         prompt="hills", out=out, **FAST), inpaint_model)
    with rasterio.open(small_raster) as a, rasterio.open(out) as b:
        src, ext = a.read(), b.read()
        west = n if side in ("west", "all") else 0
        north = n if side in ("north", "all") else 0
        grow_x = n * ((side in ("east", "all")) + (side in ("west", "all")))
        grow_y = n * ((side in ("north", "all")) + (side in ("south", "all")))
        assert (b.width, b.height) == (a.width + grow_x, a.height + grow_y)
        # Same grid: the source's pixel (0, 0) is the output's (west, north).
        assert b.transform * (west, north) == pytest.approx(a.transform * (0, 0))
        assert (b.transform.a, b.transform.e) == (a.transform.a, a.transform.e)
        assert b.crs == a.crs and b.nodata == a.nodata and b.dtypes == a.dtypes
        part = ext[:, north : north + a.height, west : west + a.width]
        assert (part == src).all()
        new = np.ones(ext.shape[1:], bool)
        new[north : north + a.height, west : west + a.width] = False
        assert (ext[0][new] != b.nodata).all()  # generated, never nodata
        assert ext[0][new].std() > 0
        assert result.width == b.width


def test_extend_by_metres_uses_the_ground_size_of_a_pixel(tmp_path, inpaint_model,
                                                          small_raster):
    with rasterio.open(small_raster) as ds:  # Web Mercator at 40 N: a pixel is ~7 m
        cx, cy = ds.transform * (ds.width / 2, ds.height / 2)
        ex, ey = ds.transform * (ds.width / 2 + 1, ds.height / 2)
        to_lonlat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
        metres = Geod(ellps="WGS84").inv(*to_lonlat.transform(cx, cy),
                                          *to_lonlat.transform(ex, ey))[2]
        width = ds.width
    out = tmp_path / "by-metres.tif"
    extend_raster(ExtendRequest(raster=small_raster, by="0.1km", side="east", prompt="hills",
                                out=out, **FAST), inpaint_model)
    with rasterio.open(out) as ds:
        assert ds.width - width == math.ceil(100 / metres)


def raster_error(tmp_path, **changes) -> str:
    fields = dict(raster=SHARED_RASTERS / "RGB.byte.tif", mask=box(0, 0, 1, 1),
                  mask_crs="EPSG:32618", prompt="x", out=tmp_path / "e.tif", **FAST)
    fields.update(changes)
    from engine.jobs.edit import open_source, plan_edit

    with pytest.raises(InputError) as info:
        with open_source(fields["raster"]) as src:
            plan_edit(EditRequest(**fields), src)
    return str(info.value)


def test_bad_inputs_get_their_messages(tmp_path):
    with rasterio.open(SHARED_RASTERS / "RGB.byte.tif") as ds:
        corner = pixel_polygon(ds, 2, 2, 10)  # the nodata frame's corner
        inner = pixel_polygon(ds, *valid_spot(SHARED_RASTERS / "RGB.byte.tif", 20), 10)
    assert "outside the raster" in raster_error(tmp_path)
    assert "only nodata" in raster_error(tmp_path, mask=corner)
    assert "is the mask's CRS right" in raster_error(tmp_path, mask=inner, mask_crs=None)
    assert "no coordinate reference system" in raster_error(
        tmp_path, raster=SHARED_RASTERS / "rotated.tif")
    assert "no coordinate reference system" in raster_error(
        tmp_path, raster=SHARED_RASTERS / "float_nan.tif")
    assert "does not exist" in raster_error(tmp_path, raster=tmp_path / "missing.tif")
    assert "must be polygons" in raster_error(
        tmp_path, mask={"type": "Point", "coordinates": [1, 2]})
    assert "not valid WKT" in raster_error(tmp_path, mask="POLYGON ((1 2, 3")
    assert "not known" in raster_error(tmp_path, mask=inner, mask_crs="EPSG:999999")
    assert "outside the model's range" in raster_error(tmp_path, mask=inner, level=21)
    assert "prompt is empty" in raster_error(tmp_path, mask=inner, prompt="  ")
    assert "band 5 does not exist" in raster_error(tmp_path, mask=inner, bands=[5, 2, 1])
    shutil.copy(SHARED_RASTERS / "RGB.byte.tif", tmp_path / "e.tif")
    assert "already exists" in raster_error(tmp_path, mask=inner)
    same = tmp_path / "e.tif"
    assert "replace the source" in raster_error(tmp_path, raster=same, out=same, mask=inner,
                                                overwrite=True)
    assert "above the limit" in raster_error(tmp_path, mask=inner, level=18, max_pixels=10**5,
                                             out=tmp_path / "new.tif")


def test_extend_bad_inputs(tmp_path):
    from engine.jobs.edit import open_source, plan_extend

    def error(**changes):
        fields = dict(raster=SHARED_RASTERS / "shade.tif", by="100m", side="east",
                      prompt="x", out=tmp_path / "x.tif", **FAST)
        fields.update(changes)
        with pytest.raises(InputError) as info, open_source(fields["raster"]) as src:
            plan_extend(ExtendRequest(**fields), src)
        return str(info.value)

    assert "expected a distance" in error(by="far")
    assert "more than 0" in error(by="0m")
    assert "side must be" in error(side="up")
    assert "above the limit" in error(by="100000px", max_pixels=10**6)


def test_cancel_leaves_no_output_and_no_scratch(tmp_path, inpaint_model):
    src_path = SHARED_RASTERS / "shade.tif"
    with rasterio.open(src_path) as ds:
        geom = pixel_polygon(ds, 400, 400, 90)

    def cancel(pipe, step, t, tensors):
        if tensors["tile"] == 2:
            pipe.cancel()
        return tensors

    with pytest.raises(GenerationCancelled):
        edit_raster(EditRequest(raster=src_path, mask=geom, mask_crs=MERCATOR, prompt="x",
                                out=tmp_path / "c.tif", fill_nodata=True, **FAST),
                    inpaint_model, cancel)
    assert list(tmp_path.iterdir()) == []


def test_cli_edit_and_extend(tmp_path, tiny_inpaint, small_raster):
    src_path = SHARED_RASTERS / "RGB.byte.tif"
    col, row = valid_spot(src_path, 20)
    with rasterio.open(src_path) as ds:
        geom = pixel_polygon(ds, col + 2, row + 2, 12)
    mask = tmp_path / "mask.geojson"
    mask.write_text(json.dumps({"type": "Feature", "geometry": geom, "properties": {}}))
    cli = [sys.executable, "-m", "engine.cli"]
    common = ["--prompt", "a lake", "--steps", "1", "--tile", "64", "--overlap", "16",
              "--model", str(tiny_inpaint), "--quiet", "--seed", "1"]
    done = subprocess.run(
        [*cli, "edit", "--raster", str(src_path), "--mask", str(mask), "--mask-crs",
         "EPSG:32618", "--out", str(tmp_path / "e.tif"), *common],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "e.tif")
    done = subprocess.run(
        [*cli, "extend", "--raster", str(small_raster), "--by", "8px", "--side", "north",
         "--out", str(tmp_path / "x.tif"), *common],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    with rasterio.open(tmp_path / "x.tif") as ds:
        assert ds.height == 80 + 8
    bad = subprocess.run(
        [*cli, "edit", "--raster", str(SHARED_RASTERS / "rotated.tif"), "--mask", str(mask),
         "--out", str(tmp_path / "r.tif"), *common],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "no coordinate reference system" in bad.stderr


def test_colour_bands_follow_the_colour_interpretation():
    from engine.geo.raster_source import colour_bands

    ci = ColorInterp
    assert colour_bands((ci.blue, ci.green, ci.red, ci.alpha)) == (3, 2, 1)
    assert colour_bands((ci.red, ci.green, ci.blue, ci.undefined)) == (1, 2, 3)
    assert colour_bands((ci.undefined,) * 4) == (1, 2, 3)
    assert colour_bands((ci.gray, ci.alpha)) == (1,)
    assert colour_bands((ci.alpha, ci.gray)) == (2,)


def test_model_scale_snaps_near_the_level_and_resamples_otherwise():
    from engine.jobs.regenerate import ModelScale

    assert ModelScale.between((1.0, 1.0), 1.05).identity
    scale = ModelScale.between((2.0, 1.0), 1.0)
    assert (scale.sx, scale.sy) == (2.0, 1.0)


def test_soft_edge_is_zero_outside_and_one_deep_inside():
    from engine.geo.edit_mask import soft_edge

    region = np.zeros((40, 40), np.uint8)
    region[10:30, 10:30] = 1
    weight = soft_edge(region, 4)
    assert (weight[region == 0] == 0).all()
    assert (weight[14:26, 14:26] == 1).all()
    assert 0 < weight[10, 20] < weight[12, 20] < 1
    tiny = np.zeros((9, 9), np.uint8)
    tiny[4, 4] = 1
    assert soft_edge(tiny, 4)[4, 4] > 0  # a one-pixel mask still changes


def masked_raster(path: Path) -> np.ndarray:
    """100 x 120 px RGB with GDAL's internal mask band (a 20 px hole), not nodata or alpha."""
    with rasterio.open(SHARED_RASTERS / "RGB.byte.tif") as src:
        data = src.read(window=rasterio.windows.Window(300, 300, 100, 120))
    mask = np.full((120, 100), 255, np.uint8)
    mask[40:60, 40:60] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
            path, "w", driver="GTiff", width=100, height=120, count=3, dtype="uint8",
            crs="EPSG:32618", transform=Affine(30, 0, 500000, 0, -30, 4000000)) as dst:
        dst.write(data)
        dst.write_mask(mask)
    return mask


@pytest.mark.parametrize("side", ["east", "north"])
def test_extend_keeps_a_mask_band_and_shows_the_new_pixels(tmp_path, inpaint_model, side):
    path = tmp_path / "masked.tif"
    mask = masked_raster(path)
    out = tmp_path / "out.tif"
    extend_raster(ExtendRequest(raster=path, by="16px", side=side, prompt="x", out=out,
                                **FAST), inpaint_model)
    with rasterio.open(out) as ds:
        got = ds.dataset_mask()
    part = got[16:, :] if side == "north" else got[:, :100]
    new = got[:16, :] if side == "north" else got[:, 100:]
    assert (part == mask).all() and (new == 255).all()


def test_filling_under_a_mask_band_makes_the_new_pixels_visible(tmp_path, inpaint_model):
    path = tmp_path / "masked.tif"
    mask = masked_raster(path)
    with rasterio.open(path) as ds:
        geom = pixel_polygon(ds, 46, 46, 8)
    out = tmp_path / "out.tif"
    edit_raster(EditRequest(raster=path, mask=geom, mask_crs=UTM18, prompt="x", out=out,
                            fill_nodata=True, dilate=0, feather=0, **FAST), inpaint_model)
    with rasterio.open(out) as ds:
        got = ds.dataset_mask()
    assert (got[47:53, 47:53] == 255).all()  # regenerated: shown
    assert (got[mask == 255] == 255).all()
    assert (got[40:44, 40:60] == 0).all()  # the rest of the hole stays hidden


def test_malformed_masks_get_messages(tmp_path):
    assert "no polygons" in raster_error(tmp_path, mask="POLYGON EMPTY")
    assert "no polygons" in raster_error(tmp_path, mask={"type": "Polygon", "coordinates": []})
    assert "GeoJSON object" in raster_error(tmp_path, mask="[1, 2]")


def test_editing_a_generated_image_keeps_it_labelled_wholly_synthetic(tmp_path, inpaint_model,
                                                                      small_raster):
    path = tmp_path / "generated.tif"
    shutil.copy(small_raster, path)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(TEXT2EARTH_SYNTHETIC="yes", TEXT2EARTH_BBOX="1,2,3,4")
        geom = pixel_polygon(ds, 30, 30, 10)
    out = tmp_path / "out.tif"
    edit_raster(EditRequest(raster=path, mask=geom, mask_crs=MERCATOR, prompt="x", out=out,
                            fill_nodata=True, **FAST), inpaint_model)
    with rasterio.open(out) as ds:
        tags = ds.tags()
    assert tags["TEXT2EARTH_SYNTHETIC"] == "yes"
    assert tags["DIGITAL_SOURCE_TYPE"].endswith("/trainedAlgorithmicMedia")
    assert "TEXT2EARTH_BBOX" not in tags  # an earlier job's keys do not describe this one


def test_far_apart_polygons_are_separate_areas(tmp_path, inpaint_model):
    """Two small squares at opposite corners: two scratch areas of a few windows each, not
    one spanning the raster; pixels between them stay as they were."""
    src_path = SHARED_RASTERS / "shade.tif"
    with rasterio.open(src_path) as ds:
        a, b = pixel_polygon(ds, 60, 60, 10), pixel_polygon(ds, 940, 900, 10)
        src = ds.read()
        allowed = grown_reference(a, ds, 4) | grown_reference(b, ds, 4)
    both = {"type": "MultiPolygon", "coordinates": [a["coordinates"], b["coordinates"]]}
    out = tmp_path / "two.tif"
    edit_raster(EditRequest(raster=src_path, mask=both, mask_crs=MERCATOR, prompt="x", out=out,
                            fill_nodata=True, **FAST), inpaint_model)
    with rasterio.open(out) as ds:
        tags, edited = ds.tags(), ds.read()
    assert tags["TEXT2EARTH_AREAS"] == "2" and int(tags["TEXT2EARTH_WINDOWS"]) <= 8
    changed = np.any(edited != src, axis=0)
    assert not changed[~allowed].any()
    assert changed[60:70, 60:70].all() and changed[900:910, 940:950].all()


def test_merge_boxes_joins_only_near_boxes():
    from engine.geo.windows import merge_boxes

    assert merge_boxes([(0, 0, 10, 10), (15, 0, 20, 10)], gap=6) == [(0, 0, 20, 10)]
    assert merge_boxes([(0, 0, 10, 10), (17, 0, 20, 10)], gap=6) == [(0, 0, 10, 10),
                                                                    (17, 0, 20, 10)]
    # a chain: the third joins once the first two have merged
    assert merge_boxes([(0, 0, 10, 10), (30, 0, 40, 10), (12, 0, 28, 10)], gap=3) == [
        (0, 0, 40, 10)]


def gdal_layout(path: Path) -> tuple[str, list[int], int]:
    """(layout, block size, overview count) as GDAL's own gdalinfo reads them."""
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(path)], capture_output=True,
                                     text=True, check=True).stdout)
    band = info["bands"][0]
    return (info["metadata"]["IMAGE_STRUCTURE"].get("LAYOUT", ""), band["block"],
            len(band.get("overviews", [])))


@pytest.mark.parametrize("blocks, overviews", [(512, "NONE"), (256, "AUTO")])
def test_an_edited_cog_keeps_the_sources_tiles_and_overviews(tmp_path, inpaint_model, blocks,
                                                            overviews):
    """A plain GDAL COG (gdal_translate -of COG) stays one after an edit: the source's block
    size, and overviews only where the source had them."""
    source = tmp_path / "plain-cog.tif"
    subprocess.run(["gdal_translate", "-q", "-of", "COG", "-co", f"BLOCKSIZE={blocks}", "-co",
                    f"OVERVIEWS={overviews}", "-co", "COMPRESS=DEFLATE",
                    str(SHARED_RASTERS / "shade.tif"), str(source)], check=True)
    layout = gdal_layout(source)
    assert layout[:2] == ("COG", [blocks, blocks]) and (layout[2] > 0) is (overviews == "AUTO")
    with rasterio.open(source) as ds:
        geom = pixel_polygon(ds, 500, 500, 10)
    out = tmp_path / "edited.tif"
    edit_raster(EditRequest(raster=source, mask=geom, mask_crs=MERCATOR, prompt="x", out=out,
                            fill_nodata=True, **FAST), inpaint_model)
    assert gdal_layout(out) == layout
