"""Regenerate the masked pixels of an area of a raster grid, window by window, with the
inpainting model at its own scale: the engine of `edit` and `extend`.

The grid's pixels live in a scratch store (engine.scenes.store); each model window reads its
part back from it, so windows see what earlier windows made, exactly as scenes do, and is
committed through the store's one window loop (run_windows): with a journal, a stopped run
resumes after the windows it recorded. Where the raster's pixels are not the model's size,
each window is resampled to the model's scale and its result back to the raster's grid.
Every written pixel is a blend ``w * new + (1 - w) * old`` with ``w`` exactly 0 outside the
region, so pixels outside it keep their values bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from rasterio.windows import Window

from engine.geo.edit_mask import soft_edge
from engine.geo.raster_source import BandMapping
from engine.geo.tiling import (
    ScenePlan,
    TileWindow,
    outpaint_blend,
    outpaint_mask,
    plan_scene,
    tile_seed,
)
from engine.geo.windows import clip, grown, is_empty, pixels_around, pixels_within, relative
from engine.model.img2img import img2img
from engine.scenes.store import Write, run_windows

SNAP_LOG2 = 0.1  # within 7 % of the model's pixel size the raster is used as it is
# Rectangles of grid pixels are rasterio Windows (whole pixels; may reach past the grid).
RegionFn = Callable[[Window], np.ndarray]  # uint8 (rows, cols) over a window: 1 = regenerate


@dataclass(frozen=True)
class ModelScale:
    """Model pixels per grid pixel along x and y (1, 1 when the grid is used as it is)."""

    sx: float
    sy: float

    @property
    def identity(self) -> bool:
        return self.sx == 1.0 and self.sy == 1.0

    @classmethod
    def between(cls, grid_px_m: tuple[float, float], model_px_m: float) -> ModelScale:
        sx, sy = grid_px_m[0] / model_px_m, grid_px_m[1] / model_px_m
        if abs(math.log2(sx)) <= SNAP_LOG2 and abs(math.log2(sy)) <= SNAP_LOG2:
            return cls(1.0, 1.0)
        return cls(sx, sy)


@dataclass(frozen=True)
class Pass:
    """One area regenerated with one window plan (an edit has one; `extend all` has four)."""

    area: Window
    plan: ScenePlan
    region: RegionFn
    seed: int
    origin: tuple[float, float]  # grid px of the model canvas's top-left corner

    def window_rect(self, w: TileWindow, scale: ModelScale) -> tuple[float, float, float, float]:
        x0 = self.origin[0] + w.col / scale.sx
        y0 = self.origin[1] + w.row / scale.sy
        return x0, y0, x0 + w.size / scale.sx, y0 + w.size / scale.sy


def plan_pass(area: Window, scale: ModelScale, tile: int, overlap: int, region: RegionFn,
              seed: int) -> Pass:
    width = max(1, math.ceil(area.width * scale.sx))
    height = max(1, math.ceil(area.height * scale.sy))
    plan = plan_scene(width, height, tile, overlap)
    ox, oy = plan.offset
    if scale.identity:
        origin = (area.col_off - ox, area.row_off - oy)
    else:
        origin = (area.col_off - ox / scale.sx, area.row_off - oy / scale.sy)
    return Pass(area, plan, region, seed, origin)


@dataclass
class Grid:
    width: int
    height: int

    @property
    def window(self) -> Window:
        return Window(0, 0, self.width, self.height)

    def clip(self, window: Window) -> Window:
        return clip(window, self.window)


@dataclass
class WindowWork:
    """What one model window needs, all model-free: computed in the planning pre-pass too."""

    window: TileWindow
    inner: Window  # grid px read for the model (may reach past the grid)
    target: Window  # grid px the window writes (inside the grid)
    region: np.ndarray  # over inner
    weight: np.ndarray  # over inner: soft edge of the region
    model_mask: np.ndarray  # tile x tile, 1 = regenerate


class Regenerator:
    """Runs passes over a WindowStore. The store holds the whole output grid, or the part
    of it these passes read (``store_origin``)."""

    def __init__(self, grid: Grid, scale: ModelScale, mapping: BandMapping, feather: int,
                 store, store_origin: tuple[int, int], nodata: float | None,
                 alpha_band: int | None, alpha_opaque: float, source_mask=None,
                 written: int | None = None) -> None:
        """``source_mask(window)``: the source's own mask band over grid px, for sources
        that have one; ``written``: the store's band (after the source's) recording which
        pixels got new values, so the output's mask can show them; committed with the
        pixels, so both resume together."""
        self.grid, self.scale, self.mapping, self.feather = grid, scale, mapping, feather
        self.store, self.store_origin = store, store_origin
        self.nodata, self.alpha_band, self.alpha_opaque = nodata, alpha_band, alpha_opaque
        self.source_mask, self.written = source_mask, written

    # -- geometry, model-free ---------------------------------------------------------------

    def windows(self, p: Pass) -> Iterator[WindowWork]:
        """The windows of a pass that have anything to regenerate."""
        tile = p.plan.tile
        for w in p.plan.windows():
            x0, y0, x1, y1 = p.window_rect(w, self.scale)
            inner = pixels_around(x0, y0, x1, y1)
            if self.scale.identity:
                target = self.grid.clip(inner)
            else:  # the pixels wholly inside the window (windows overlap: none is missed)
                target = self.grid.clip(pixels_within(x0, y0, x1, y1))
            if is_empty(target):
                continue
            m = self.feather + 1  # the soft edge must see the region beyond the window
            big = p.region(grown(inner, m))
            weight = soft_edge(big, self.feather)[m:-m, m:-m]
            region = big[m:-m, m:-m]
            if self.scale.identity:
                covered = region > 0
            else:
                covered = _resize(region.astype(np.float32) * 255.0, (tile, tile),
                                  self._box(inner, (x0, y0), tile), Image.BILINEAR) > 0
            model_mask = covered.astype(np.float32) * outpaint_mask(p.plan, w)
            if model_mask.any():
                yield WindowWork(w, inner, target, region, weight, model_mask)

    # -- pixels -----------------------------------------------------------------------------

    def read(self, window: Window) -> np.ndarray:
        """All bands over a window of grid px; outside the grid, edge pixels repeated (context
        only: the model mask is 0 there and nothing is written back)."""
        inside = self.grid.clip(window)
        data = self.store.read(window=self._store_window(inside))
        at = relative(inside, window)
        pad = ((0, 0), (at.row_off, window.height - at.row_off - at.height),
               (at.col_off, window.width - at.col_off - at.width))
        return np.pad(data, pad, mode="edge")

    def model_image(self, data: np.ndarray) -> np.ndarray:
        bands = [self.mapping.to_bytes(data[b - 1], k) for k, b in enumerate(self.mapping.bands)]
        if len(bands) == 1:
            bands = bands * 3
        return np.stack(bands, axis=-1)

    def count(self, passes: list[Pass]) -> int:
        return sum(1 for p in passes for _ in self.windows(p))

    def targets(self, passes: list[Pass]) -> list[Window]:
        """What each window writes, in store px: the cells of the store's journal."""
        return [self._store_window(work.target) for p in passes for work in self.windows(p)]

    def run(self, pipe, passes: list[Pass], generate: Callable, done: int = 0) -> int:
        """``generate(pipe, image, mask, seed, tile_no)`` -> tile x tile x 3 uint8; returns
        the windows done so far (``done`` counts earlier runs' windows). One window at a time
        (each reads what the one before made); a window the store recorded is not made
        again."""
        numbered = []

        def fronts():
            for k, p in enumerate(passes):
                for work in self.windows(p):
                    numbered.append(None)
                    yield [(f"{k}/{work.window.key}", p, work, done + len(numbered))]

        def compute(group) -> list[Write]:
            [(key, p, work, tile_no)] = group
            return [(key, self._store_window(work.target),
                     self._window(pipe, p, work, generate, tile_no))]

        run_windows(self.store, fronts(), compute, key=lambda item: item[0])
        return done + len(numbered)

    def _window(self, pipe, p: Pass, work: WindowWork, generate: Callable,
                tile_no: int) -> np.ndarray:
        """The store's bands over the window's target, with its new pixels blended in."""
        w, inner = work.window, work.inner
        x0, y0, _, _ = p.window_rect(w, self.scale)
        data = self.read(inner)
        image = self.model_image(data)
        if not self.scale.identity:
            image = _resize(image, (p.plan.tile, p.plan.tile),
                            self._box(inner, (x0, y0), p.plan.tile), Image.LANCZOS)
        new = generate(pipe, np.ascontiguousarray(image), work.model_mask,
                       tile_seed(p.seed, w.ix, w.iy), tile_no)
        blend = outpaint_blend(p.plan, w)
        target = work.target
        sl = relative(target, inner).toslices()
        if self.scale.identity:
            new, blend = new[sl], blend[sl]
        else:
            shape = (target.height, target.width)
            (tr0, tr1), (tc0, tc1) = target.toranges()
            box = ((tc0 - x0) * self.scale.sx, (tr0 - y0) * self.scale.sy,
                   (tc1 - x0) * self.scale.sx, (tr1 - y0) * self.scale.sy)
            new = _resize(new, shape, box, Image.LANCZOS)
            blend = _resize(blend, shape, box, Image.BILINEAR)
        weight = work.weight[sl] * blend
        old = data[:, sl[0], sl[1]]
        written = old[self.written - 1] > 0 if self.written is not None else None
        masked_valid = None
        if self.source_mask is not None:
            masked_valid = (self.source_mask(work.target) > 0) | (
                written if written is not None else False)
        out = self.blend(old, new, weight, masked_valid)
        if written is not None:
            out[self.written - 1] = written | (weight > 0)
        return out

    def _box(self, inner: Window, xy0: tuple[float, float], tile: int):
        x, y = xy0[0] - inner.col_off, xy0[1] - inner.row_off
        return (x, y, x + tile / self.scale.sx, y + tile / self.scale.sy)

    def blend(self, old: np.ndarray, new_rgb: np.ndarray, weight: np.ndarray,
              masked_valid: np.ndarray | None = None) -> np.ndarray:
        """Source-typed bands with the new colours blended in where weight > 0."""
        out = old.copy()
        write = weight > 0
        if not write.any():
            return out
        valid = self._valid(old)
        if masked_valid is not None:
            valid &= masked_valid
        # Over nodata or transparent pixels there is nothing to fade into: all new.
        weight = np.where(write & ~valid, 1.0, weight)
        if len(self.mapping.bands) == 1:
            colours = [np.asarray(Image.fromarray(new_rgb).convert("L"))]
        else:
            colours = [new_rgb[..., k] for k in range(3)]
        dtype = out.dtype
        for k, b in enumerate(self.mapping.bands):
            values = self.mapping.from_bytes(colours[k], k)
            mixed = weight * values + (1.0 - weight) * np.nan_to_num(old[b - 1].astype(np.float64))
            out[b - 1] = np.where(write, _cast(mixed, dtype, self.nodata), old[b - 1])
        if self.alpha_band is not None:
            alpha = out[self.alpha_band - 1]
            out[self.alpha_band - 1] = np.where(write & (alpha == 0), self.alpha_opaque, alpha)
        return out

    def _valid(self, data: np.ndarray) -> np.ndarray:
        valid = np.ones(data.shape[1:], bool)
        for b in self.mapping.bands:
            band = data[b - 1]
            if self.nodata is not None:
                valid &= ~(np.isnan(band) if np.isnan(self.nodata) else band == self.nodata)
        if self.alpha_band is not None:
            valid &= data[self.alpha_band - 1] > 0
        return valid

    def _store_window(self, window: Window) -> Window:
        return relative(window, Window(*self.store_origin, 0, 0))


def _resize(array: np.ndarray, shape: tuple[int, int], box, resample) -> np.ndarray:
    """PIL resampling of a (rows, cols[, 3]) array's ``box`` (fractional pixels) to ``shape``."""
    rows, cols = shape
    if array.dtype == np.uint8:
        return np.array(Image.fromarray(array).resize((cols, rows), resample, box=box))
    image = Image.fromarray(array.astype(np.float32))  # mode F
    return np.array(image.resize((cols, rows), resample, box=box))


def _cast(values: np.ndarray, dtype: np.dtype, nodata: float | None) -> np.ndarray:
    """Round and clip into the source type; a new pixel never lands on the nodata value."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(values), info.min, info.max)
        if nodata is not None and not np.isnan(nodata):
            step = 1 if nodata < info.max else -1
            out = np.where(out == nodata, nodata + step, out)
        return out.astype(dtype)
    out = values.astype(dtype)
    if nodata is not None and not np.isnan(nodata):
        out = np.where(out == nodata, np.nextafter(out, np.inf, dtype=dtype), out)
    return out


def generate_window(prompt: str, negative_prompt: str | None, level: int, steps: int,
                    guidance: float, callback, tiles: int) -> Callable:
    """The ``generate`` for Regenerator.run: one inpainting call per window."""

    def generate(pipe, image, mask, seed, tile_no):
        def on_step(p, i, t, tensors):
            if callback is not None:
                callback(p, i, t, {**tensors, "tile": tile_no, "tiles": tiles})
            return tensors

        output = pipe(prompt, image, mask, level=level, negative_prompt=negative_prompt,
                      num_inference_steps=steps, guidance_scale=guidance,
                      generator=torch.Generator("cpu").manual_seed(seed),
                      callback_on_step_end=on_step)
        return output.images[0]

    return generate


def img2img_window(prompt: str, negative_prompt: str | None, level: int, strength: float,
                   steps: int, guidance: float, callback: Callable | None, tiles: int,
                   inpainting: bool) -> Callable:
    """Regenerator.run's ``generate``: one image-to-image call per window, seeded by the
    window's position; the inpainting model keeps the window's masked-out context (what
    earlier windows made in the shared strips, and what lies outside the region)."""

    def generate(pipe, image, mask, seed, tile_no):
        def on_step(p, i, t, tensors):
            if callback is not None:
                callback(p, i, t, {**tensors, "tile": tile_no, "tiles": tiles})
            return tensors

        return img2img(pipe, prompt, image, strength, level=level,
                       negative_prompt=negative_prompt, num_inference_steps=steps,
                       guidance_scale=guidance, generator=seed,
                       mask=mask if inpainting else None, callback_on_step_end=on_step
                       ).images[0]

    return generate


def store_profile(profile: dict, width: int, height: int, **changes) -> dict:
    """An uncompressed, tiled copy of (part of) the grid, for engine.scenes.store."""
    out = {k: v for k, v in profile.items() if k in ("dtype", "count", "nodata", "crs",
                                                     "transform")}
    out.update(driver="GTiff", width=width, height=height, tiled=True, blockxsize=256,
               blockysize=256, BIGTIFF="IF_SAFER", **changes)
    return out
