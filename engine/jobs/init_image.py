"""Start a generation from an existing raster (`generate --init-raster R --strength S`).

R may be in any CRS and of any kind: a photo, a land-cover classification with a palette, a
rendered map, a sketch. It is first warped onto the output grid (rasterio.warp.reproject: a
palette's class indices by nearest neighbour, then looked up in its colour table, so classes
never blend; other rasters bilinearly), made RGB the way engine.geo.raster_source reads
rasters (colour bands by their interpretation, one gray band repeated, other types stretched
to bytes), and where it does not reach the output, filled with its mean colour. A scene's
init is warped in strips of rows straight into a scratch file (bounded memory).
Then image-to-image (engine.model.img2img) makes the imagery:

- one canvas: the warped image on the model canvas, one img2img call (the text-to-image
  model, the same seed as a plain generation);
- a scene (larger than one window): the windows of the scene plan, in row order, each one
  img2img of the warped image where it is new and of what earlier windows made where they
  overlap (engine.jobs.regenerate's window loop over a scratch copy of the warped image);
  with the inpainting model the overlap is kept as context, with the text-to-image one it is
  feathered. The scratch is a journaled store of engine.scenes.store, the output locked for
  the run: the same command after a crash or kill resumes after the windows recorded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from pyproj import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from engine.errors import InputError
from engine.geo.geotiff import copy_window, write_geotiff, write_geotiff_blocks
from engine.geo.grid import OutputGrid
from engine.geo.raster_source import BandMapping, band_mapping, describe_source, open_source
from engine.geo.tiling import ScenePlan
from engine.jobs.regenerate import (
    Grid,
    ModelScale,
    Regenerator,
    img2img_window,
    plan_pass,
    store_profile,
)
from engine.model.img2img import check_strength, img2img, kept_steps
from engine.scenes.run import held_output, remove_superseded
from engine.scenes.state import file_identity, fingerprint, scratch_names
from engine.scenes.store import STORE_CACHE_BYTES, WindowStore, cuts_of

MEAN_SIDE = 1024  # the fill colour is measured on a warp at most this many px wide
WARP_ROWS = 512  # a scene's init is warped this many rows at a time
BYTES = BandMapping((1, 2, 3), (0.0,) * 3, (255.0,) * 3, "uint8")


def _name(src) -> str:
    return Path(src.name).name


def check_init_raster(path: str | Path, grid: OutputGrid, strength: float) -> None:
    """Everything that needs no model: the strength, the file, its CRS, and that it reaches
    the output's extent at all."""
    check_strength(strength)
    with open_source(path) as src:
        _check_crs_and_overlap(src, grid)


def _check_crs_and_overlap(src, grid: OutputGrid) -> None:
    name = _name(src)
    if src.crs is None or src.transform == Affine.identity():
        raise InputError(
            f"the init raster {name} has no coordinate reference system (or no grid), so it "
            "cannot be placed on the extent: assign its CRS first (QGIS: Layer Properties > "
            "Source, or gdal_edit.py -a_srs EPSG:XXXX)")
    try:
        left, bottom, right, top = transform_bounds(src.crs, grid.crs.to_wkt(), *src.bounds,
                                                    densify_pts=21)
    except Exception:  # noqa: BLE001 - PROJ's failures vary; no overlap is what it means
        left = bottom = right = top = float("nan")
    g_left, g_bottom, g_right, g_top = grid.bounds
    if not (left < g_right and right > g_left and bottom < g_top and top > g_bottom):
        raise InputError(
            f"the init raster {name} does not overlap the extent (it covers x "
            f"{left:.6g}..{right:.6g}, y {bottom:.6g}..{top:.6g} in {grid.crs.name}; the "
            f"extent is x {g_left:.6g}..{g_right:.6g}, y {g_bottom:.6g}..{g_top:.6g}): is its "
            "CRS right?")


class InitSource:
    """An open init raster, read as the model's RGB bytes on any grid: a paletted band's
    class indices are warped by nearest neighbour and then looked up in its colour table
    (the same as warping the colours by nearest, without expanding the whole raster);
    other rasters' colour bands are warped bilinearly and mapped to bytes as
    engine.geo.raster_source maps them (one gray band repeated)."""

    def __init__(self, src, crs: CRS) -> None:
        self.src = src
        self.dst_crs = rasterio.crs.CRS.from_wkt(crs.to_wkt())
        self.palette = ColorInterp.palette in src.colorinterp
        if self.palette:
            self.table = np.zeros((65536, 4), np.uint8)
            for index, colour in src.colormap(1).items():
                self.table[index] = colour
        else:
            self.info = describe_source(src)
            self.mapping = band_mapping(src, self.info)

    def warp(self, transform: Affine, width: int, height: int
             ) -> tuple[np.ndarray, np.ndarray]:
        """((3, height, width) uint8, where the raster has data) on a grid."""
        src = self.src
        if self.palette:
            index = self._band(1, transform, width, height, Resampling.nearest, src.nodata)
            valid = np.isfinite(index)
            colours = self.table[np.nan_to_num(index).astype(np.int64).clip(0, 65535)]
            valid &= colours[..., 3] > 0
            return np.moveaxis(colours[..., :3], 2, 0), valid
        planes, valid = [], np.ones((height, width), bool)
        for k, b in enumerate(self.info.rgb_bands):
            band = self._band(b, transform, width, height, Resampling.bilinear, src.nodata)
            valid &= np.isfinite(band)
            planes.append(self.mapping.to_bytes(np.nan_to_num(band), k))
        if self.info.alpha_band is not None:
            alpha = self._band(self.info.alpha_band, transform, width, height,
                               Resampling.nearest, None)
            valid &= np.nan_to_num(alpha) > 0
        return np.stack(planes * 3 if len(planes) == 1 else planes), valid

    def _band(self, band: int, transform: Affine, width: int, height: int,
              resampling: Resampling, src_nodata) -> np.ndarray:
        """One band warped onto the grid as float32, NaN where the source has no data."""
        out = np.full((height, width), np.nan, np.float32)
        reproject(rasterio.band(self.src, band), out, dst_crs=self.dst_crs,
                  dst_transform=transform, dst_nodata=np.nan, src_nodata=src_nodata,
                  resampling=resampling)
        return out


def _no_valid(path) -> InputError:
    return InputError(f"the init raster {Path(path).name} holds no valid pixels over the "
                      "extent (all nodata or transparent there)")


def _mean(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.rint(rgb[:, valid].astype(np.float64).mean(axis=1)).astype(np.uint8)


def warp_init(path: str | Path, crs: CRS, transform: Affine, width: int, height: int,
              output: Window | None = None) -> tuple[np.ndarray, float]:
    """(the raster warped onto a (small) grid as (height, width, 3) uint8, the share of
    ``output`` (the part of the grid that is the output; default all of it) it covers);
    uncovered pixels get the mean colour of the covered ones."""
    with open_source(path) as src:
        rgb, valid = InitSource(src, crs).warp(transform, width, height)
    inside = valid if output is None else valid[output.toslices()]
    if not inside.any():
        raise _no_valid(path)
    rgb = np.where(valid[None], rgb, _mean(rgb, valid)[:, None, None])
    return np.ascontiguousarray(np.moveaxis(rgb, 0, 2)), float(inside.mean())


def warp_init_into(store, path: str | Path, crs: CRS, transform: Affine, width: int,
                   height: int) -> float:
    """warp_init for a scene: written into ``store`` in strips of rows (each output pixel is
    warped from the source alone, so strips equal one whole warp), in bounded memory; the
    fill colour is the mean of a decimated warp of the same extent. Returns the coverage
    (``store`` None: only that, for a resumed scene)."""
    with open_source(path) as src:
        init = InitSource(src, crs)
        factor = max(1, math.ceil(max(width, height) / MEAN_SIDE))
        small, small_valid = init.warp(transform * Affine.scale(factor),
                                       math.ceil(width / factor), math.ceil(height / factor))
        fill = _mean(small, small_valid) if small_valid.any() else np.full(3, 128, np.uint8)
        covered = 0
        for r in range(0, height, WARP_ROWS):
            n = min(WARP_ROWS, height - r)
            rgb, valid = init.warp(transform * Affine.translation(0, r), width, n)
            covered += int(valid.sum())
            if store is not None:
                store.write(np.where(valid[None], rgb, fill[:, None, None]),
                            window=Window(0, r, width, n))
    if not covered:
        raise _no_valid(path)
    return covered / (width * height)


def generate_from_init(request, grid: OutputGrid, windows: ScenePlan | None, model, text: str,
                       seed: int, tags: dict[str, str], software: str, callback) -> Path:
    """The output of `generate --init-raster`: see the module's docstring."""
    pipe = model.pipeline
    strength = check_strength(request.strength)
    tags.update(TEXT2EARTH_INIT_RASTER=Path(request.init_raster).name,
                TEXT2EARTH_STRENGTH=f"{strength:g}",
                TEXT2EARTH_STRENGTH_STEPS=f"{kept_steps(request.steps, strength)} of "
                                          f"{request.steps}")
    if windows is None:
        col, row = grid.canvas_offset
        image, covered = warp_init(request.init_raster, grid.crs, grid.canvas_transform,
                                   grid.canvas_width, grid.canvas_height,
                                   Window(col, row, grid.width, grid.height))
        tags["TEXT2EARTH_INIT_COVERAGE"] = f"{covered:.4g}"
        output = img2img(pipe, text, image, strength, level=grid.level,
                         negative_prompt=request.negative_prompt,
                         num_inference_steps=request.steps, guidance_scale=request.guidance,
                         generator=torch.Generator("cpu").manual_seed(seed),
                         callback_on_step_end=callback)
        return write_geotiff(request.out, output.images[0][row:row + grid.height,
                                                           col:col + grid.width],
                             grid.crs, grid.transform, tags, request.overwrite,
                             software=software, allowed_dirs=request.allowed_dirs)
    tags["TEXT2EARTH_SCENE_METHOD"] = "img2img windows" + (
        " (inpainting context)" if model.inpainting else " (feathered)")
    out = Path(request.out)
    profile = store_profile(dict(count=3, dtype="uint8", nodata=None,
                                 crs=rasterio.crs.CRS.from_wkt(grid.crs.to_wkt()),
                                 transform=grid.transform), grid.width, grid.height)
    regen = Regenerator(Grid(grid.width, grid.height), ModelScale(1.0, 1.0), BYTES, 0,
                        None, (0, 0), None, None, 0.0)
    scene = plan_pass(Window(0, 0, grid.width, grid.height), ModelScale(1.0, 1.0),
                      windows.tile, windows.overlap, _everywhere, seed)
    key = fingerprint([file_identity(request.init_raster), strength, text, seed,
                       request.steps, request.guidance, request.negative_prompt, grid.level,
                       grid.crs.to_wkt(), tuple(grid.transform), grid.width, grid.height,
                       windows.tile, windows.overlap, getattr(request, "scheduler", None),
                       model.weights_sha256, model.inpainting, str(model.dtype),
                       str(model.device)])
    coverage = []

    def fill(store: WindowStore) -> None:
        coverage.append(warp_init_into(store, request.init_raster, grid.crs, grid.transform,
                                       grid.width, grid.height))

    with held_output(out) as folder:
        store = None
        try:
            with rasterio.Env(GDAL_CACHEMAX=STORE_CACHE_BYTES):
                targets = regen.targets([scene])
                meta = {"seed": seed, "out": out.name, "pid": os.getpid(),
                        "windows": len(targets)}
                store = WindowStore.resumable(folder, scratch_names(out, key), key, profile,
                                              meta, cuts_of(targets), fill=fill)
                if not coverage:  # resumed: measured again (a warp in strips, nothing written)
                    coverage.append(warp_init_into(None, request.init_raster, grid.crs,
                                                   grid.transform, grid.width, grid.height))
                tags["TEXT2EARTH_INIT_COVERAGE"] = f"{coverage[0]:.4g}"
                regen.store = store
                tiles = windows.nx * windows.ny
                generate = img2img_window(text, request.negative_prompt, grid.level, strength,
                                          request.steps, request.guidance, callback, tiles,
                                          model.inpainting)
                regen.run(pipe, [scene], generate)
                folder.check()
                with store.writing():
                    path = write_geotiff_blocks(
                        out, grid.width, grid.height,
                        copy_window(store, 0, 0, grid.width, grid.height), grid.crs,
                        grid.transform, tags, request.overwrite, software, request.allowed_dirs)
        except BaseException as exc:
            if store is not None:
                store.abandon(exc)
            raise
        store.remove()
        remove_superseded(folder, out)
    return path


def _everywhere(window: Window) -> np.ndarray:
    return np.ones((window.height, window.width), np.uint8)
