"""How many pixels an extent becomes at a level, and whether that is worth running. Stdlib.

The engine's grid (engine/grid.py) sizes its output the same way: the level's ground pixel
converted to the CRS's units with the ground scale at the extent's centre (Web Mercator:
the level's Mercator pixel), and the pixel count rounded. The dock uses these numbers to
enable Generate and to say, before anything is sent, why an output is too small or too big.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .contract import scale
from .contract.tiles import DEFAULT_OVERLAP, DEFAULT_TILE, plan_scene

DEFAULT_MAX_PIXELS = 25000 * 25000  # the engine's default limit (engine/geo/grid.py;
# tests/test_engine_plugin_agreement.py holds the two equal); a connected engine's own
# limit comes from its /health (limit_from_health)
MIN_USEFUL_PX = 64  # below this a side shows nothing the model can draw


def limit_from_health(health: dict | None) -> int:
    """The engine's pixel limit from its /health answer (``max_pixels``), else the default:
    not connected yet, or an engine older than the field. A value that is no positive whole
    number is ignored rather than trusted to refuse or allow everything."""
    value = (health or {}).get("max_pixels")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return DEFAULT_MAX_PIXELS


def pixel_size_units(ground_m: float, metres_per_unit_x: float, metres_per_unit_y: float,
                     level: int | None = None, web_mercator: bool = False) -> tuple[float, float]:
    """The level's pixel in the extent CRS's units along x and y."""
    if web_mercator and level is not None:
        side = scale.mercator_resolution(level)
        return side, side
    return ground_m / metres_per_unit_x, ground_m / metres_per_unit_y


def grid_size(width_units: float, height_units: float, pixel_x: float, pixel_y: float,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Columns and rows, rounded as the engine rounds them (a size beyond any float is
    capped above the limit, so it is still refused)."""
    cols, rows = width_units / pixel_x, height_units / pixel_y
    if not (math.isfinite(cols) and math.isfinite(rows)):
        return max_pixels + 1, max_pixels + 1
    return max(1, round(cols)), max(1, round(rows))


def window_count(width_px: int, height_px: int, tile: int = DEFAULT_TILE,
                 overlap: int = DEFAULT_OVERLAP) -> int:
    """How many model windows the engine will run for this output (1: a single canvas)."""
    if width_px <= tile and height_px <= tile:
        return 1
    plan = plan_scene(width_px, height_px, tile, overlap)
    return plan.nx * plan.ny


@dataclass(frozen=True)
class SizeCheck:
    width: int
    height: int
    windows: int
    problem: str | None  # why Generate is not offered, in a GIS user's words; None: fine


def check_size(width: int, height: int, level: int, ground_m: float,
               max_pixels: int = DEFAULT_MAX_PIXELS, tile: int = DEFAULT_TILE,
               overlap: int = DEFAULT_OVERLAP) -> SizeCheck:
    """The output's size, model windows, and what is wrong with it, if anything."""
    where = f"at level {level} ({ground_m:.3g} m per pixel)"
    if width * height > max_pixels:
        megapixels = width * height / 1e6
        return SizeCheck(width, height, 0, (
            f"Too large: {width:,} x {height:,} pixels ({megapixels:,.0f} megapixels) {where}, "
            f"more than the engine's limit of {max_pixels / 1e6:,.0f} megapixels. Choose a "
            "coarser resolution (a lower level) or a smaller extent."))
    windows = window_count(width, height, tile, overlap)
    if min(width, height) < MIN_USEFUL_PX:
        return SizeCheck(width, height, windows, (
            f"Too small: only {width:,} x {height:,} pixels {where}. Draw a larger extent or "
            f"choose a finer resolution (a higher level): at least {MIN_USEFUL_PX} pixels a "
            "side."))
    return SizeCheck(width, height, windows, None)
