"""Regenerate the masked pixels of an area of a raster grid, window by window, with the
inpainting model at its own scale: the engine of `edit` and `extend`.

The grid's pixels live in a scratch GeoTIFF (the ``Store``); each model window reads its
part back from it, so windows see what earlier windows made, exactly as scenes do. Where the
raster's pixels are not the model's size, each window is resampled to the model's scale and
its result back to the raster's grid. Every written pixel is a blend
``w * new + (1 - w) * old`` with ``w`` exactly 0 outside the region, so pixels outside it
keep their values bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import rasterio
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

SNAP_LOG2 = 0.1  # within 7 % of the model's pixel size the raster is used as it is
Rect = tuple[int, int, int, int]  # col0, row0, col1, row1 in grid pixels (end exclusive)
RegionFn = Callable[[Rect], np.ndarray]  # uint8 (rows, cols): 1 = regenerate


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

    area: Rect
    plan: ScenePlan
    region: RegionFn
    seed: int
    origin: tuple[float, float]  # grid px of the model canvas's top-left corner

    def window_rect(self, w: TileWindow, scale: ModelScale) -> tuple[float, float, float, float]:
        x0 = self.origin[0] + w.col / scale.sx
        y0 = self.origin[1] + w.row / scale.sy
        return x0, y0, x0 + w.size / scale.sx, y0 + w.size / scale.sy


def plan_pass(area: Rect, scale: ModelScale, tile: int, overlap: int, region: RegionFn,
              seed: int) -> Pass:
    c0, r0, c1, r1 = area
    width = max(1, math.ceil((c1 - c0) * scale.sx))
    height = max(1, math.ceil((r1 - r0) * scale.sy))
    plan = plan_scene(width, height, tile, overlap)
    ox, oy = plan.offset
    if scale.identity:
        origin = (c0 - ox, r0 - oy)
    else:
        origin = (c0 - ox / scale.sx, r0 - oy / scale.sy)
    return Pass(area, plan, region, seed, origin)


def merge_boxes(boxes: list[Rect], gap: int) -> list[Rect]:
    """Boxes closer than ``gap`` merged into their bounding box, until none are: areas far
    apart become separate passes, so two small polygons at opposite corners of a huge raster
    cost two small scratch areas, not one the size of the raster."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged, out = False, []
        for b in boxes:
            for i, o in enumerate(out):
                if (b[0] < o[2] + gap and o[0] < b[2] + gap
                        and b[1] < o[3] + gap and o[1] < b[3] + gap):
                    out[i] = (min(b[0], o[0]), min(b[1], o[1]), max(b[2], o[2]),
                              max(b[3], o[3]))
                    merged = True
                    break
            else:
                out.append(b)
        boxes = out
    return sorted(boxes, key=lambda b: (b[1], b[0]))


@dataclass
class Grid:
    width: int
    height: int

    def clip(self, rect: Rect) -> Rect:
        c0, r0, c1, r1 = rect
        return max(c0, 0), max(r0, 0), min(c1, self.width), min(r1, self.height)


@dataclass
class WindowWork:
    """What one model window needs, all model-free: computed in the planning pre-pass too."""

    window: TileWindow
    inner: Rect  # grid px read for the model (may reach past the grid)
    target: Rect  # grid px the window writes (inside the grid)
    region: np.ndarray  # over inner
    weight: np.ndarray  # over inner: soft edge of the region
    model_mask: np.ndarray  # tile x tile, 1 = regenerate


class Regenerator:
    """Runs passes over a Store. The store holds the whole output grid, or the part of it
    these passes read (``store_origin``)."""

    def __init__(self, grid: Grid, scale: ModelScale, mapping: BandMapping, feather: int,
                 store, store_origin: tuple[int, int], nodata: float | None,
                 alpha_band: int | None, alpha_opaque: float, source_mask=None,
                 written=None) -> None:
        """``source_mask(rect)``: the source's own mask band over a grid rect, for sources
        that have one; ``written``: a one-band store beside ``store`` recording which pixels
        got new values, so the output's mask can show them."""
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
            inner = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
            if self.scale.identity:
                target = self.grid.clip(inner)
            else:  # the pixels wholly inside the window (windows overlap: none is missed)
                target = self.grid.clip((math.ceil(x0), math.ceil(y0),
                                         math.floor(x1), math.floor(y1)))
            if target[0] >= target[2] or target[1] >= target[3]:
                continue
            m = self.feather + 1  # the soft edge must see the region beyond the window
            c0, r0, c1, r1 = inner
            big = p.region((c0 - m, r0 - m, c1 + m, r1 + m))
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

    def read(self, rect: Rect) -> np.ndarray:
        """All bands over rect; outside the grid, edge pixels repeated (context only: the
        model mask is 0 there and nothing is written back)."""
        c0, r0, c1, r1 = rect
        k0, q0, k1, q1 = self.grid.clip(rect)
        ox, oy = self.store_origin
        data = self.store.read(window=Window(k0 - ox, q0 - oy, k1 - k0, q1 - q0))
        pad = ((0, 0), (q0 - r0, r1 - q1), (k0 - c0, c1 - k1))
        return np.pad(data, pad, mode="edge")

    def model_image(self, data: np.ndarray) -> np.ndarray:
        bands = [self.mapping.to_bytes(data[b - 1], k) for k, b in enumerate(self.mapping.bands)]
        if len(bands) == 1:
            bands = bands * 3
        return np.stack(bands, axis=-1)

    def count(self, passes: list[Pass]) -> int:
        return sum(1 for p in passes for _ in self.windows(p))

    def run(self, pipe, passes: list[Pass], generate: Callable, done: int = 0) -> int:
        """``generate(pipe, image, mask, seed, tile_no)`` -> tile x tile x 3 uint8; returns
        the windows done so far (``done`` counts earlier runs' windows)."""
        for p in passes:
            for work in self.windows(p):
                done += 1
                self._window(pipe, p, work, generate, done)
        return done

    def _window(self, pipe, p: Pass, work: WindowWork, generate: Callable, tile_no: int):
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
        tc0, tr0, tc1, tr1 = work.target
        sl = (slice(tr0 - inner[1], tr1 - inner[1]), slice(tc0 - inner[0], tc1 - inner[0]))
        if self.scale.identity:
            new, blend = new[sl], blend[sl]
        else:
            shape = (tr1 - tr0, tc1 - tc0)
            box = ((tc0 - x0) * self.scale.sx, (tr0 - y0) * self.scale.sy,
                   (tc1 - x0) * self.scale.sx, (tr1 - y0) * self.scale.sy)
            new = _resize(new, shape, box, Image.LANCZOS)
            blend = _resize(blend, shape, box, Image.BILINEAR)
        weight = work.weight[sl] * blend
        masked_valid = None
        if self.source_mask is not None:
            masked_valid = ((self.source_mask(work.target) > 0)
                            | (self._read_written(work.target) > 0))
        self.write(work.target, self.blend(data[:, sl[0], sl[1]], new, weight, masked_valid))
        if self.written is not None:
            done = (self._read_written(work.target) > 0) | (weight > 0)
            self._write_written(work.target, done.astype(np.uint8))

    def _box(self, inner: Rect, xy0: tuple[float, float], tile: int):
        return (xy0[0] - inner[0], xy0[1] - inner[1],
                xy0[0] - inner[0] + tile / self.scale.sx, xy0[1] - inner[1] + tile / self.scale.sy)

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

    def _store_window(self, rect: Rect) -> Window:
        c0, r0, c1, r1 = rect
        ox, oy = self.store_origin
        return Window(c0 - ox, r0 - oy, c1 - c0, r1 - r0)

    def write(self, rect: Rect, data: np.ndarray) -> None:
        self.store.write(data, window=self._store_window(rect))

    def _read_written(self, rect: Rect) -> np.ndarray:
        if self.written is None:
            return np.zeros((rect[3] - rect[1], rect[2] - rect[0]), np.uint8)
        return self.written.read(1, window=self._store_window(rect))

    def _write_written(self, rect: Rect, done: np.ndarray) -> None:
        self.written.write(done, 1, window=self._store_window(rect))


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


def open_store(path, profile: dict, width: int, height: int, **changes):
    """An uncompressed, tiled read/write copy of (part of) the grid."""
    store_profile = {k: v for k, v in profile.items()
                     if k in ("dtype", "count", "nodata", "crs", "transform")}
    store_profile.update(driver="GTiff", width=width, height=height, tiled=True,
                         blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER", **changes)
    return rasterio.open(path, "w+", **store_profile)
