"""The output grid's pixels before any edit, read from the source: a grid rect's
pixels, mask band and scratch fill (the source's part pasted in, fill beyond it)."""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from engine.jobs.edit.request import COPY_ROWS, RasterPlan
from engine.jobs.regenerate import (
    Rect,
)


def paste_inside(out: np.ndarray, rect: Rect, offset: tuple[int, int],
                  size: tuple[int, int], read) -> np.ndarray:
    """``out`` covers grid ``rect``; where a raster of ``size`` (width, height) placed at
    ``offset`` in the grid overlaps it, ``read(window in that raster)`` is pasted in."""
    c0, r0, c1, r1 = rect
    ox, oy = offset
    k0, q0 = max(c0, ox), max(r0, oy)
    k1, q1 = min(c1, ox + size[0]), min(r1, oy + size[1])
    if k0 < k1 and q0 < q1:
        out[..., q0 - r0 : q1 - r0, k0 - c0 : k1 - c0] = read(
            Window(k0 - ox, q0 - oy, k1 - k0, q1 - q0))
    return out


def source_rows(src, plan: RasterPlan, rect: Rect) -> np.ndarray:
    """The output grid's pixels in ``rect`` before any edit: the source where it lies, the
    fill value (nodata, else 0; transparent) beyond it."""
    c0, r0, c1, r1 = rect
    fill = plan.info.nodata if plan.info.nodata is not None else 0
    data = np.full((src.count, r1 - r0, c1 - c0), fill, dtype=plan.info.dtype)
    if plan.info.alpha_band is not None:
        data[plan.info.alpha_band - 1] = 0
    return paste_inside(data, rect, plan.offset, (src.width, src.height),
                         lambda window: src.read(window=window))


def source_mask(src, plan: RasterPlan, rect: Rect) -> np.ndarray:
    """The source's mask band over a grid rect (0 beyond the source)."""
    c0, r0, c1, r1 = rect
    return paste_inside(np.zeros((r1 - r0, c1 - c0), np.uint8), rect, plan.offset,
                         (src.width, src.height),
                         lambda window: src.dataset_mask(window=window))


def fill_store(src, plan: RasterPlan, store, rect: Rect) -> None:
    c0, r0, c1, r1 = rect
    for r in range(r0, r1, COPY_ROWS):
        n = min(COPY_ROWS, r1 - r)
        store.write(source_rows(src, plan, (c0, r, c1, r + n)),
                    window=Window(0, r - r0, c1 - c0, n))
