"""From what the user filled in to the engine's job, and the names of its files (their layer
names: result_names.py). Stdlib only.

Kept free of Qt so the dock, the Processing algorithm and the tests build jobs the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from .contract import scale
from .contract.samplers import DEFAULT_SCHEDULER, SCHEDULERS  # noqa: F401 - re-exported for the dock
from .contract.tiles import DEFAULT_OVERLAP, DEFAULT_TILE
from .output_plan import window_count  # noqa: F401 - where the dock and tests find it

AUTO, LEVEL, RESOLUTION = "auto", "level", "resolution"
LARGE_OUTPUT_PX = 2048 * 2048  # above this the dock warns: minutes to hours of work
PIPELINE_CHECK_TAG = "TEXT2EARTH_PIPELINE_CHECK"
PIPELINE_CHECK_SUFFIX = ".pipeline-check"  # files.KIND_TAGS puts a clash counter before it
DEFAULT_PATTERN = "{date}_{prompt}_s{seed}.tif"
# How a scene past one model window is built (the engine's scene_method); "cascade" paints the
# whole extent at a coarser level first, then refines it level by level.
SCENE_METHODS = {
    "auto": "Auto (the engine chooses)",
    "outpaint": "Outpaint (window by window)",
    "joint": "Joint (all windows at once)",
    "cascade": "Cascade (coarse to fine)",
}


@dataclass(frozen=True)
class Quality:
    """A speed / quality trade-off a user picks by name instead of four numbers."""

    steps: int
    scheduler: str
    tile: int  # scene window side in px: smaller windows, less work per window
    overlap: int


# Draft gets a CPU user a first result in minutes: DPM++ holds up at few steps, and a thinner
# overlap cuts a scene's work; every preset keeps the model's 256 px training window (larger
# windows are unverified with the real weights). Best is the authors' setting.
QUALITY = {
    "Draft": Quality(steps=15, scheduler="dpm++", tile=DEFAULT_TILE, overlap=32),
    "Standard": Quality(steps=30, scheduler="dpm++", tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP),
    "Best": Quality(steps=50, scheduler="euler", tile=DEFAULT_TILE, overlap=DEFAULT_OVERLAP),
}
DEFAULT_QUALITY = "Standard"


@dataclass(frozen=True)
class Extent:
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    crs: str  # authid ("EPSG:32632") or WKT for custom CRSs

    @property
    def bbox(self) -> list[float]:
        return [self.xmin, self.ymin, self.xmax, self.ymax]

    def is_empty(self) -> bool:
        return not (self.xmax > self.xmin and self.ymax > self.ymin)


@dataclass(frozen=True)
class Resolution:
    """How the output resolution is chosen: auto from the map, a level, or m/px.

    AUTO takes the ground size of one screen pixel at the map's current zoom (measured on the
    ellipsoid by the caller), so the generated pixels match what the user sees whatever the
    project CRS: QGIS's scale of a Web Mercator or geographic map is not a ground scale away
    from the equator.
    """

    mode: str = AUTO
    level: int = 17
    metres_per_pixel: float = 1.0  # RESOLUTION: the user's; AUTO: one screen pixel's

    def choose(self, latitude: float | None) -> scale.LevelChoice:
        """The level the engine will use (it decides again, identically, from the job)."""
        if self.mode == LEVEL:
            return scale.LevelChoice(scale.check_level(self.level), float(self.level), False,
                                     "given")
        choice = scale.level_for_resolution(self.metres_per_pixel, latitude)
        if self.mode == AUTO:
            return scale.LevelChoice(choice.level, choice.exact_level, choice.clamped,
                                     f"auto: a screen pixel is {choice.reason}")
        return choice

    def job_fields(self) -> dict:
        if self.mode == LEVEL:
            return {"level": self.level}
        return {"resolution": self.metres_per_pixel}


def output_size(width_m: float, height_m: float, ground_resolution_m: float) -> tuple[int, int]:
    """Pixels the engine will produce for an extent of this ground size (never below 1)."""
    return (max(1, round(width_m / ground_resolution_m)),
            max(1, round(height_m / ground_resolution_m)))


def slug(text: str, limit: int = 40) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return (cleaned[:limit].rstrip("-") or "scene")


def output_name(pattern: str, prompt: str, seed: int | None, level: int | None,
                when: datetime | None = None) -> str:
    """A file name from the user's pattern: {date}, {time}, {prompt}, {seed}, {level}."""
    when = when or datetime.now()
    try:
        name = pattern.format(
            date=when.strftime("%Y%m%d"), time=when.strftime("%H%M%S"), prompt=slug(prompt),
            seed="random" if seed is None else seed, level="auto" if level is None else level,
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"file name pattern {pattern!r} is not valid ({exc}); use {{date}}, {{time}}, "
            "{prompt}, {seed}, {level}"
        ) from None
    name = name.replace("/", "-").replace("\\", "-").strip()
    if not name.lower().endswith((".tif", ".tiff")):
        name += ".tif"
    return name


def pipeline_check_name(name: str) -> str:
    """'x.tif' -> 'x.pipeline-check.tif', 'x_2.tif' -> 'x_2.pipeline-check.tif': demo-weight
    results say what they are, once; a name already tagged (with a clash counter after the
    tag, as older versions named them, too) is kept."""
    if PIPELINE_CHECK_SUFFIX in name:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        return name + PIPELINE_CHECK_SUFFIX
    return f"{stem}{PIPELINE_CHECK_SUFFIX}.{suffix}"


def is_pipeline_check(result: dict | None) -> bool:
    """Whether the engine made this result with its built-in demo weights."""
    return bool(((result or {}).get("tags") or {}).get(PIPELINE_CHECK_TAG))


def build_job(
    extent: Extent,
    prompt: str,
    resolution: Resolution,
    negative_prompt: str = "",
    seed: int | None = None,
    steps: int = 50,
    guidance: float = 4.0,
    scheduler: str = DEFAULT_SCHEDULER,
    model: str | None = None,
    out: str | None = None,
    precision: str = "auto",
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    scene_method: str = "auto",
) -> dict:
    """The JSON body of POST /jobs; raises ValueError with a message for the user."""
    if extent.is_empty():
        raise ValueError("draw an extent first (it is empty)")
    if not prompt.strip():
        raise ValueError("type a prompt: what should the scene show?")
    job = {
        "type": "generate",
        "bbox": extent.bbox,
        "crs": extent.crs,
        "prompt": prompt.strip(),
        "negative_prompt": negative_prompt.strip() or None,
        "seed": seed,
        "steps": int(steps),
        "guidance": float(guidance),
        "scheduler": scheduler,
        "out": out,
    }
    job.update(resolution.job_fields())
    if model:
        job["model"] = model
    if precision != "auto":  # auto is the engine's default: older engines need no field
        job["precision"] = precision
    if (tile, overlap) != (DEFAULT_TILE, DEFAULT_OVERLAP):  # likewise for the defaults
        job["tile"], job["overlap"] = int(tile), int(overlap)
    if scene_method not in SCENE_METHODS:
        raise ValueError(f"unknown scene method {scene_method!r}: "
                         f"{', '.join(SCENE_METHODS)}")
    if scene_method != "auto":
        job["scene_method"] = scene_method
    return job


def metadata_from_tags(tags: dict) -> dict:
    """The generation parameters recorded by the engine, keyed without the TEXT2EARTH_ prefix."""
    prefix = "TEXT2EARTH_"
    return {k[len(prefix):].lower(): v for k, v in tags.items() if k.startswith(prefix)}
