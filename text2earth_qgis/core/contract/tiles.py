"""Windows for scenes larger than one model tile. Stdlib only.

The engine plans its scenes with this module and the plugin shows the same window count, so
the two never disagree (the plugin cannot import the engine: that would pull in torch).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

# The model's training size, and the size of every example its authors publish. Larger windows
# (fewer of them) are an option, unverified with the real weights: nothing public shows how
# the model behaves at 512 px.
DEFAULT_TILE = 256
DEFAULT_OVERLAP = 64  # a quarter of the window, as 128 was of 512
VAE_FACTOR = 8


@dataclass(frozen=True)
class TileWindow:
    index: int  # position in generation order
    ix: int
    iy: int
    col: int  # top-left pixel in the scene canvas
    row: int
    size: int

    @property
    def key(self) -> str:
        return f"{self.ix},{self.iy}"


@dataclass(frozen=True)
class ScenePlan:
    """Overlapping square windows covering a canvas that holds the output grid, centred."""

    width: int  # the output grid
    height: int
    tile: int
    overlap: int
    nx: int
    ny: int

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def canvas_width(self) -> int:
        return self.nx * self.stride + self.overlap

    @property
    def canvas_height(self) -> int:
        return self.ny * self.stride + self.overlap

    @property
    def offset(self) -> tuple[int, int]:
        """(col, row) of the output's top-left pixel in the canvas."""
        return (self.canvas_width - self.width) // 2, (self.canvas_height - self.height) // 2

    def windows(self) -> list[TileWindow]:
        """Row by row, left to right: each window's known part is above and to its left."""
        out = []
        for iy in range(self.ny):
            for ix in range(self.nx):
                out.append(TileWindow(len(out), ix, iy, ix * self.stride, iy * self.stride,
                                      self.tile))
        return out

    def core(self, window: TileWindow) -> tuple[int, int, int, int]:
        """(col0, row0, col1, row1) in canvas pixels that this window alone decodes: the
        windows' cores partition the canvas, each border in the middle of an overlap."""
        half = self.overlap // 2
        col0 = window.col + (half if window.ix > 0 else 0)
        row0 = window.row + (half if window.iy > 0 else 0)
        col1 = window.col + self.tile - (self.overlap - half if window.ix < self.nx - 1 else 0)
        row1 = window.row + self.tile - (self.overlap - half if window.iy < self.ny - 1 else 0)
        return col0, row0, col1, row1


def plan_scene(width: int, height: int, tile: int = DEFAULT_TILE,
               overlap: int = DEFAULT_OVERLAP) -> ScenePlan:
    if tile % VAE_FACTOR or overlap % VAE_FACTOR:
        raise ValueError(f"tile and overlap must be multiples of {VAE_FACTOR} px")
    if tile < 64:
        raise ValueError(f"tile must be at least 64 px, got {tile}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap must be in 0..{tile // 2} px for a {tile} px tile")
    if width < 1 or height < 1:
        raise ValueError("the output must be at least one pixel")
    stride = tile - overlap
    nx = max(1, math.ceil((width - overlap) / stride))
    ny = max(1, math.ceil((height - overlap) / stride))
    return ScenePlan(width, height, tile, overlap, nx, ny)


def tile_seed(seed: int, ix: int, iy: int) -> int:
    """A window's seed from the job's seed and its position: same request, same scene."""
    digest = hashlib.sha256(f"text2earth-tile:{seed}:{ix}:{iy}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
