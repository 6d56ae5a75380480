"""Google zoom level <-> ground resolution <-> map scale.

Stdlib only: this one module is imported by the engine (its own venv, with torch) and shipped
inside the QGIS plugin zip, so both sides of the process boundary pick the same level for the
same request instead of two copies drifting apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Web Mercator metres per pixel at level 0 on the equator: 2*pi*6378137 / 256.
MERCATOR_RESOLUTION_L0 = 156543.03392804097
MIN_LEVEL = 10
MAX_LEVEL = 18
LEVELS = tuple(range(MIN_LEVEL, MAX_LEVEL + 1))
# Level 0 is "resolution unknown" and the null condition of classifier-free guidance.
UNKNOWN_LEVEL = 0
# Beyond Web Mercator's latitude limit there is no Google tile, so no level means anything.
MAX_LATITUDE = 85.0511287798066
METRES_PER_INCH = 0.0254
DEFAULT_DPI = 96.0


def nominal_resolution(level: int) -> float:
    """The Git-10M label of level L: 2**(17-L) m/px (17 = 1 m, 18 = 0.5 m, 10 = 128 m)."""
    return 2.0 ** (17 - level)


def mercator_resolution(level: int) -> float:
    """Size of a level-L pixel in EPSG:3857 units: the same at every latitude."""
    return MERCATOR_RESOLUTION_L0 / 2.0**level


def check_latitude(latitude: float) -> None:
    if not math.isfinite(latitude) or abs(latitude) > MAX_LATITUDE:
        raise ValueError(
            f"latitude {latitude:.4f} is beyond Web Mercator's limit of +/-{MAX_LATITUDE:.4f} "
            "degrees: Google zoom levels, and so the model's resolutions, do not exist there"
        )


def ground_resolution(level: float, latitude: float) -> float:
    """Metres on the ground covered by one level-L Google pixel at this latitude."""
    check_latitude(latitude)
    return MERCATOR_RESOLUTION_L0 * math.cos(math.radians(latitude)) / 2.0**level


@dataclass(frozen=True)
class LevelChoice:
    """A level picked for a request, with what was asked and whether it had to be clamped."""

    level: int
    exact_level: float
    clamped: bool
    reason: str

    @property
    def message(self) -> str:
        if not self.clamped:
            return f"level {self.level} ({self.reason})"
        return (
            f"level {self.level}: {self.reason} asks for level {self.exact_level:.2f}, "
            f"outside the model's range {MIN_LEVEL}..{MAX_LEVEL}; clamped to {self.level}"
        )


def _choose(exact_level: float, reason: str) -> LevelChoice:
    if not math.isfinite(exact_level):
        raise ValueError(f"{reason} does not correspond to any zoom level")
    # Round in log2 space: the nearest level by resolution ratio, halves going to the finer one.
    nearest = math.floor(exact_level + 0.5)
    level = min(MAX_LEVEL, max(MIN_LEVEL, nearest))
    return LevelChoice(level, exact_level, level != nearest, reason)


def check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise ValueError(f"level {level!r} is outside the model's range {MIN_LEVEL}..{MAX_LEVEL}")
    return level


def level_for_resolution(resolution_m: float, latitude: float | None = None) -> LevelChoice:
    """Level whose pixel is nearest to ``resolution_m`` metres.

    With a latitude, the level's true ground resolution there is matched (what the output
    grid will use); without one, the nominal Git-10M resolution 2**(17-L).
    """
    if not (isinstance(resolution_m, (int, float)) and math.isfinite(resolution_m)) or (
        resolution_m <= 0
    ):
        raise ValueError(f"resolution must be a positive number of metres, got {resolution_m!r}")
    if latitude is None:
        exact = 17.0 - math.log2(resolution_m)
        reason = f"{resolution_m:g} m/px (nominal)"
    else:
        check_latitude(latitude)
        exact = math.log2(MERCATOR_RESOLUTION_L0 * math.cos(math.radians(latitude)) / resolution_m)
        reason = f"{resolution_m:g} m/px at latitude {latitude:.2f}"
    return _choose(exact, reason)


def resolution_for_scale(scale_denominator: float, dpi: float = DEFAULT_DPI) -> float:
    """Metres on the ground per screen pixel of a 1:N map shown at ``dpi``."""
    if not math.isfinite(scale_denominator) or scale_denominator <= 0:
        raise ValueError(f"map scale must be 1:N with N > 0, got {scale_denominator!r}")
    if not math.isfinite(dpi) or dpi <= 0:
        raise ValueError(f"dpi must be positive, got {dpi!r}")
    return scale_denominator * METRES_PER_INCH / dpi


def parse_scale(text: str) -> float:
    """'1:25000', '1/25000', '25000' or '1:25,000' -> 25000.0."""
    cleaned = str(text).strip().replace(",", "").replace("_", "").replace(" ", "")
    for sep in (":", "/"):
        if sep in cleaned:
            head, _, cleaned = cleaned.partition(sep)
            if head != "1":
                raise ValueError(f"map scale must look like 1:N, got {text!r}")
    try:
        value = float(cleaned)
    except ValueError:
        raise ValueError(f"map scale must look like 1:N, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"map scale must be 1:N with N > 0, got {text!r}")
    return value


def level_for_scale(
    scale_denominator: float, latitude: float | None = None, dpi: float = DEFAULT_DPI
) -> LevelChoice:
    """Level whose pixel matches one screen pixel of a 1:N map at ``dpi``."""
    resolution = resolution_for_scale(scale_denominator, dpi)
    choice = level_for_resolution(resolution, latitude)
    return LevelChoice(
        choice.level,
        choice.exact_level,
        choice.clamped,
        f"map scale 1:{scale_denominator:,.0f} at {dpi:g} dpi = {choice.reason}",
    )


def level_for_extent(
    extent_width_m: float, output_width_px: int, latitude: float | None = None
) -> LevelChoice:
    """Level that fits an extent ``extent_width_m`` metres wide into ``output_width_px`` pixels."""
    if output_width_px <= 0:
        raise ValueError(f"output width must be a positive number of pixels, got {output_width_px}")
    if not math.isfinite(extent_width_m) or extent_width_m <= 0:
        raise ValueError(f"extent width must be positive, got {extent_width_m!r} m")
    return level_for_resolution(extent_width_m / output_width_px, latitude)


def level_table(latitude: float = 0.0) -> list[tuple[int, float, float]]:
    """(level, nominal m/px, ground m/px at ``latitude``) for every level the model knows."""
    return [(lv, nominal_resolution(lv), ground_resolution(lv, latitude)) for lv in LEVELS]
