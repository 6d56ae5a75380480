"""Rectangle math on rasterio Windows (whole grid pixels; a window may reach past a grid)."""

from __future__ import annotations

import math

from rasterio.windows import Window, intersect, union


def clip(window: Window, to: Window) -> Window:
    """The part of ``window`` inside ``to``; zero-sized where they do not meet."""
    if intersect(window, to):
        return window.intersection(to)
    return Window(window.col_off, window.row_off, 0, 0)


def is_empty(window: Window) -> bool:
    return window.width <= 0 or window.height <= 0


def relative(window: Window, to: Window) -> Window:
    """``window`` in the pixels of ``to`` (whose top-left corner becomes 0, 0)."""
    return Window(window.col_off - to.col_off, window.row_off - to.row_off, window.width,
                  window.height)


def pixels_around(col0: float, row0: float, col1: float, row1: float) -> Window:
    """The whole pixels covering a fractional box: offsets floored, far edges ceiled."""
    c0, r0 = math.floor(col0), math.floor(row0)
    return Window(c0, r0, math.ceil(col1) - c0, math.ceil(row1) - r0)


def pixels_within(col0: float, row0: float, col1: float, row1: float) -> Window:
    """The whole pixels wholly inside a fractional box (zero-sized when none is)."""
    c0, r0 = math.ceil(col0), math.ceil(row0)
    return Window(c0, r0, max(0, math.floor(col1) - c0), max(0, math.floor(row1) - r0))


def grown(window: Window, by: int) -> Window:
    return Window(window.col_off - by, window.row_off - by, window.width + 2 * by,
                  window.height + 2 * by)


def from_bounds(col0: int, row0: int, col1: int, row1: int) -> Window:
    """The window of the pixels col0 <= col < col1, row0 <= row < row1."""
    return Window(col0, row0, col1 - col0, row1 - row0)


def merge_windows(windows: list[Window], gap: int) -> list[Window]:
    """Windows closer than ``gap`` merged into their union, until none are: areas far apart
    become separate passes, so two small polygons at opposite corners of a huge raster cost
    two small scratch areas, not one the size of the raster."""
    windows = list(windows)
    merged = True
    while merged:
        merged, out = False, []
        for w in windows:
            for i, o in enumerate(out):
                if intersect(w, grown(o, gap)):
                    out[i] = union(w, o)
                    merged = True
                    break
            else:
                out.append(w)
        windows = out
    return sorted(windows, key=lambda w: (w.row_off, w.col_off))


def merge_boxes(boxes: list[tuple[int, int, int, int]],
                gap: int) -> list[tuple[int, int, int, int]]:
    """merge_windows for boxes given as (col0, row0, col1, row1)."""
    merged = merge_windows([from_bounds(*box) for box in boxes], gap)
    return [(w.col_off, w.row_off, w.col_off + w.width, w.row_off + w.height) for w in merged]
