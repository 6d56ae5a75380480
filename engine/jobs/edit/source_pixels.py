"""The output grid's pixels before any edit, read from the source: a grid window's
pixels, mask band and scratch fill (the source's part pasted in, fill beyond it)."""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from engine.geo.windows import clip, is_empty, relative
from engine.jobs.edit.request import COPY_ROWS, RasterPlan


def paste_inside(out: np.ndarray, window: Window, offset: tuple[int, int],
                 size: tuple[int, int], read) -> np.ndarray:
    """``out`` covers grid ``window``; where a raster of ``size`` (width, height) placed at
    ``offset`` in the grid overlaps it, ``read(window in that raster)`` is pasted in."""
    raster = Window(*offset, *size)
    overlap = clip(window, raster)
    if not is_empty(overlap):
        rows, cols = relative(overlap, window).toslices()
        out[..., rows, cols] = read(relative(overlap, raster))
    return out


def source_rows(src, plan: RasterPlan, window: Window) -> np.ndarray:
    """The output grid's pixels in ``window`` before any edit: the source where it lies, the
    fill value (nodata, else 0; transparent) beyond it."""
    fill = plan.info.nodata if plan.info.nodata is not None else 0
    data = np.full((src.count, window.height, window.width), fill, dtype=plan.info.dtype)
    if plan.info.alpha_band is not None:
        data[plan.info.alpha_band - 1] = 0
    return paste_inside(data, window, plan.offset, (src.width, src.height),
                        lambda part: src.read(window=part))


def source_mask(src, plan: RasterPlan, window: Window) -> np.ndarray:
    """The source's mask band over a window of the grid (0 beyond the source)."""
    return paste_inside(np.zeros((window.height, window.width), np.uint8), window,
                        plan.offset, (src.width, src.height),
                        lambda part: src.dataset_mask(window=part))


def fill_store(src, plan: RasterPlan, store, window: Window) -> None:
    (r0, r1), (c0, _) = window.toranges()
    for r in range(r0, r1, COPY_ROWS):
        rows = Window(c0, r, window.width, min(COPY_ROWS, r1 - r))
        store.write(source_rows(src, plan, rows), window=relative(rows, window))
