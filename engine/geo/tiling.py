"""Masks and blend weights for scene windows (numpy); the plan itself is in core.tiles."""

from __future__ import annotations

import numpy as np
from affine import Affine

from text2earth_qgis.core.contract.tiles import (  # noqa: F401 - re-exported for the engine
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    VAE_FACTOR,
    ScenePlan,
    TileWindow,
    plan_scene,
    tile_seed,
)


def canvas_transform(plan: ScenePlan, output_transform: Affine) -> Affine:
    """The scene canvas's transform: the output grid's, moved to the canvas's top-left."""
    col, row = plan.offset
    return output_transform * Affine.translation(-col, -row)


def outpaint_mask(plan: ScenePlan, window: TileWindow) -> np.ndarray:
    """1 = to generate, 0 = already there (the strips shared with earlier windows)."""
    mask = np.ones((plan.tile, plan.tile), np.float32)
    if window.iy > 0:
        mask[: plan.overlap, :] = 0
    if window.ix > 0:
        mask[:, : plan.overlap] = 0
    return mask


def ramp(n: int) -> np.ndarray:
    """0 -> 1 over n pixels, excluding both ends, so neither side is ever fully dropped."""
    return (np.arange(n, dtype=np.float32) + 0.5) / n


def outpaint_blend(plan: ScenePlan, window: TileWindow) -> np.ndarray:
    """Weight of the new window's pixels against what exists: 0 at the window's outer edge,
    rising across the shared strip to 1 where the strip ends; 1 in the new part."""
    weight = np.ones((plan.tile, plan.tile), np.float32)
    if plan.overlap:
        r = ramp(plan.overlap)
        if window.ix > 0:
            weight[:, : plan.overlap] *= r[None, :]
        if window.iy > 0:
            weight[: plan.overlap, :] *= r[:, None]
    return weight


def joint_weights(tile: int, overlap: int) -> np.ndarray:
    """Feathered weights for averaging overlapping windows' noise predictions."""
    edge = np.ones(tile, np.float32)
    if overlap:
        r = ramp(overlap)
        edge[:overlap] = r
        edge[-overlap:] = r[::-1]
    return np.outer(edge, edge)
