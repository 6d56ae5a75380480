"""The level ladder of a coarse-to-fine scene (``--scene-method cascade``): which levels, at
what strengths, on which grids. Pure planning: no model, so a ladder that does not fit fails
before any model is loaded.

The ladder starts at a coarse level where the whole extent fits in one or two windows (at
most ``target - CASCADE_DEPTH``, never below the model's coarsest level 10) and climbs one
level at a time to the target: each level doubles the pixels per side, the step the model's
level conditioning describes (level L is 2 ** (17 - L) m/px). Every level's grid is built by
engine.geo.grid from the same request (same extent and CRS), the last one is the target grid
itself, so a cascade covers exactly the pixels the other scene methods do.

Strengths (image-to-image: the share of the denoising redone from the upsampled coarser
level, 0 = keep it, 1 = ignore it) are per level step, coarse to fine. The defaults are a
starting point, not a measurement with the real weights: 0.6 into the intermediate levels
(each level adds objects the coarser one could not show), 0.5 into the target (keep the
layout, add the detail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import InputError
from engine.geo.grid import LevelRequest, OutputGrid, build_grid
from engine.geo.regions import parse_regions, window_prompts
from engine.geo.tiling import ScenePlan, canvas_transform, plan_scene
from text2earth_qgis.core.contract.scale import MAX_LEVEL, MIN_LEVEL

CASCADE = "cascade"
CASCADE_DEPTH = 3  # levels below the target at least: 8x coarser, 1/64 of the pixels
MAX_COARSE_WINDOWS = 2  # the coarse pass sees the whole extent in this many windows
DEFAULT_STRENGTH = 0.6  # each step into an intermediate level
DEFAULT_FINAL_STRENGTH = 0.5  # the step into the target level


@dataclass(frozen=True)
class Rung:
    """One level of the ladder: its grid (same extent), its windows, and the strength of the
    step into it (1.0 for the coarse pass, generated from noise)."""

    level: int
    grid: OutputGrid
    plan: ScenePlan
    strength: float
    prompts: dict | None = None  # window key -> prompt, from prompt regions


@dataclass(frozen=True)
class Ladder:
    rungs: tuple[Rung, ...]

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(r.level for r in self.rungs)

    @property
    def strengths(self) -> tuple[float, ...]:
        """The strengths of the level steps, coarse to fine (the coarse pass has none)."""
        return tuple(r.strength for r in self.rungs[1:])

    @property
    def windows(self) -> int:
        return sum(r.plan.nx * r.plan.ny for r in self.rungs)

    def describe(self) -> dict[str, str]:
        """The tags' fields: levels and strengths, coarse to fine."""
        return {"cascade_levels": ",".join(map(str, self.levels)),
                "cascade_strengths": ",".join(f"{s:g}" for s in self.strengths)}

    def key(self) -> str:
        """What of the ladder shapes pixels, for a scratch's resume fingerprint."""
        return repr([(r.level, r.strength, r.plan, tuple(r.grid.transform),
                      sorted((r.prompts or {}).items())) for r in self.rungs])


def ladder_text(levels) -> str:
    return " -> ".join(map(str, levels))


def check_strengths(strengths, steps: int, levels) -> tuple[float, ...]:
    """One strength per level step (coarse to fine), each a number in 0..1; None: defaults."""
    if strengths is None:
        return (DEFAULT_STRENGTH,) * (steps - 1) + (DEFAULT_FINAL_STRENGTH,)
    values = tuple(strengths)
    for s in values:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) \
                or not 0 <= s <= 1:
            raise InputError(f"cascade strengths must be numbers in 0..1, got {s!r}")
    if len(values) != steps:
        raise InputError(
            f"the cascade's ladder here is {ladder_text(levels)} ({steps} level step"
            f"{'s' if steps != 1 else ''}): give {steps} strength{'s' if steps != 1 else ''}, "
            f"coarse to fine, or none for the defaults; got {len(values)}")
    return tuple(float(s) for s in values)


def _level_grid(request, level: int) -> OutputGrid:
    return build_grid(request.bbox, request.crs, LevelRequest(level=level), request.out_crs,
                      request.max_pixels)


def _windows(request, grid: OutputGrid) -> ScenePlan:
    return plan_scene(grid.width, grid.height, request.tile, request.overlap)


def coarse_level(request, target: int) -> int:
    """``target - CASCADE_DEPTH``, or coarser until the extent fits in MAX_COARSE_WINDOWS
    windows, never below MIN_LEVEL."""
    level = max(MIN_LEVEL, target - CASCADE_DEPTH)
    while level > MIN_LEVEL:
        plan = _windows(request, _level_grid(request, level))
        if plan.nx * plan.ny <= MAX_COARSE_WINDOWS:
            break
        level -= 1
    return level


def check_ladder_options(request) -> None:
    """The cascade's options are refused with any other scene method (they would be ignored)."""
    if request.scene_method != CASCADE and (request.cascade_strengths is not None
                                            or request.cascade_coarse_level is not None):
        raise InputError("cascade strengths and coarse level apply only to the cascade scene "
                         "method (--scene-method cascade)")


def plan_ladder(request, grid: OutputGrid, text: str | None = None) -> Ladder:
    """The ladder for ``request`` (a GenerateRequest) whose target grid is ``grid``; raises
    InputError with one line when it does not fit."""
    target = grid.level
    coarse = request.cascade_coarse_level
    if coarse is None:
        if target <= MIN_LEVEL:
            raise InputError(
                f"level {target} is the model's coarsest: a cascade needs a coarser level to "
                "start from; use --scene-method joint or outpaint, or a finer level")
        coarse = coarse_level(request, target)
    elif isinstance(coarse, bool) or not isinstance(coarse, int) \
            or not MIN_LEVEL <= coarse <= MAX_LEVEL:
        raise InputError(f"the cascade's coarse level must be a level in "
                         f"{MIN_LEVEL}..{MAX_LEVEL}, got {coarse!r}")
    elif coarse >= target:
        raise InputError(
            f"the target level {target} is not finer than the cascade's coarse level {coarse}: "
            f"give a coarse level in {MIN_LEVEL}..{target - 1}" if target > MIN_LEVEL else
            f"the target level {target} is the model's coarsest: no cascade can reach it")
    levels = tuple(range(coarse, target + 1))
    strengths = check_strengths(request.cascade_strengths, len(levels) - 1, levels)
    regions = (parse_regions(request.regions, request.regions_crs, grid.crs)
               if request.regions else None)
    rungs = []
    for level, strength in zip(levels, (1.0, *strengths), strict=True):
        level_grid = grid if level == target else _level_grid(request, level)
        plan = _windows(request, level_grid)
        prompts = None
        if regions:
            prompts = window_prompts(plan, canvas_transform(plan, level_grid.transform),
                                     regions, text if text is not None else request.prompt)
        rungs.append(Rung(level, level_grid, plan, strength, prompts))
    return Ladder(tuple(rungs))
