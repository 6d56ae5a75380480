"""'Start from layers': the generate job's init raster fields and the rendered image's file
names. Stdlib; the rendering itself is QGIS's (init_render.py).

The engine warps ``init_raster`` (an absolute path, any CRS) onto the output grid and starts
the denoising from it, noised up to ``strength`` (0: the image as it is, 1: the prompt alone).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

DEFAULT_STRENGTH = 0.6
INIT_SUFFIX = ".start.tif"


def init_fields(raster: str | Path, strength: float) -> dict:
    """The job fields that start a generation from ``raster``; ValueError in a user's words."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not (
            math.isfinite(strength) and 0 <= strength <= 1):
        raise ValueError("the strength goes from 0 (keep the layers' picture) to 1 (the "
                         "prompt alone)")
    path = Path(raster)
    if not path.is_absolute():
        raise ValueError(f"the rendered layers {raster} need a full path")
    return {"init_raster": str(path), "strength": round(float(strength), 3)}


def init_image_name(output_name: str) -> str:
    """The rendered layers' file beside the output: 'scene.tif' -> 'scene.start.tif'."""
    stem = output_name[:-4] if output_name.lower().endswith(".tif") else output_name
    return stem + INIT_SUFFIX


def temp_name(name: str) -> str:
    """A hidden name in the same folder, written first and renamed once complete."""
    return f".{name}.{os.getpid()}.part.tif"
