"""From what the user filled in to the engine's job, and the names the results get. Stdlib only.

Kept free of Qt so the dock, the Processing algorithm and the tests build jobs the same way.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

from . import scale

AUTO, LEVEL, RESOLUTION = "auto", "level", "resolution"
MODEL_TILE = 256
LARGE_OUTPUT_PX = 2048 * 2048  # above this the dock warns: minutes to hours of work
LAYER_PREFIX = "Text2Earth (synthetic): "
DEFAULT_PATTERN = "{date}_{prompt}_s{seed}.tif"


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
    """How the output resolution is chosen: auto from the map scale, a level, or m/px."""

    mode: str = AUTO
    level: int = 17
    metres_per_pixel: float = 1.0
    scale_denominator: float | None = None  # the canvas scale, for AUTO
    dpi: float = scale.DEFAULT_DPI

    def choose(self, latitude: float | None) -> scale.LevelChoice:
        """The level the engine will use (it decides again, identically, from the job)."""
        if self.mode == LEVEL:
            return scale.LevelChoice(scale.check_level(self.level), float(self.level), False,
                                     "given")
        if self.mode == RESOLUTION:
            return scale.level_for_resolution(self.metres_per_pixel, latitude)
        if self.scale_denominator is None:
            raise ValueError("no map scale yet to choose the level from")
        return scale.level_for_scale(self.scale_denominator, latitude, self.dpi)

    def job_fields(self) -> dict:
        if self.mode == LEVEL:
            return {"level": self.level}
        if self.mode == RESOLUTION:
            return {"resolution": self.metres_per_pixel}
        return {"scale": self.scale_denominator, "dpi": self.dpi}


def output_size(width_m: float, height_m: float, ground_resolution_m: float) -> tuple[int, int]:
    """Pixels the engine will produce for an extent of this ground size (never below 1)."""
    return (max(1, round(width_m / ground_resolution_m)),
            max(1, round(height_m / ground_resolution_m)))


def tile_count(width_px: int, height_px: int, tile: int = MODEL_TILE) -> int:
    return math.ceil(width_px / tile) * math.ceil(height_px / tile)


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


def layer_name(prompt: str, limit: int = 60) -> str:
    text = " ".join(prompt.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return LAYER_PREFIX + text


def build_job(
    extent: Extent,
    prompt: str,
    resolution: Resolution,
    negative_prompt: str = "",
    seed: int | None = None,
    steps: int = 50,
    guidance: float = 4.0,
    scheduler: str = "euler",
    model: str | None = None,
    out: str | None = None,
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
    return job


def metadata_from_tags(tags: dict) -> dict:
    """The generation parameters recorded by the engine, keyed without the TEXT2EARTH_ prefix."""
    prefix = "TEXT2EARTH_"
    return {k[len(prefix):].lower(): v for k, v in tags.items() if k.startswith(prefix)}
