"""What a scene job is: its request fields as the scene methods need them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.windows import Window

from engine.geo.tiling import ScenePlan, TileWindow, outpaint_blend

OUTPAINT, JOINT = "outpaint", "joint"
# diffusers' step callback (pipe, step index, timestep, tensors); for scenes the tensors dict
# also carries "tile" (from 1) and "tiles", so one callback serves single images and scenes.
SceneCallback = Callable[[object, int, object, dict], dict]


@dataclass(frozen=True)
class SceneJob:
    prompt: str
    negative_prompt: str | None
    level: int
    steps: int
    guidance: float
    seed: int
    out: Path
    crs: object  # pyproj CRS
    transform: Affine  # the output grid's
    overwrite: bool
    allowed_dirs: tuple | None
    prompts: dict | None = None  # window key -> prompt, from prompt regions
    window_batch: int | None = None  # windows per UNet call; None: as many as memory allows
    ladder: object | None = None  # the cascade method's levels (engine.scenes.ladder)


def tile_window(w: TileWindow) -> Window:
    return Window(w.col, w.row, w.size, w.size)


def as_bands(image: np.ndarray) -> np.ndarray:
    """(rows, cols, 3) -> rasterio's (3, rows, cols)."""
    return np.moveaxis(image, 2, 0)


def as_image(bands: np.ndarray) -> np.ndarray:
    return np.moveaxis(bands, 0, 2)


def feathered_writes(plan: ScenePlan, group: list[TileWindow], images, context) -> list:
    """The store's writes of windows made over ``context`` (what they read): each new image
    feathered into its context over the strips shared with windows made before it."""
    writes = []
    for w, image, before in zip(group, images, context, strict=True):
        weight = outpaint_blend(plan, w)[..., None]
        blended = weight * image + (1.0 - weight) * before
        writes.append((w.key, tile_window(w), as_bands(np.rint(blended).astype(np.uint8))))
    return writes
