"""Several scene windows per UNet call: which windows go together, and how many fit.

Joint denoising: every window of a step reads the same latents, so any grouping gives the same
arithmetic (up to the floating-point effect of the batch size on the kernels); the
predictions are then added into the canvas in window order, as before.

Outpainting: a window is conditioned on the pixels its earlier neighbours (in row order) left
in the canvas, so windows cannot simply be batched. With ``r`` the number of neighbours a
window overlaps on each side (1 when the overlap is at most half a tile), window (ix, iy)
overlaps exactly the windows within ``r`` columns and rows of it. Numbering windows by the
wavefront ``k = ix + (r + 1) * iy``:
- every neighbour that comes earlier in row order has a smaller k (a row above: at most
  ``r - (r + 1) = -1``; same row, left: -1), and every later one a larger k;
- two windows with the same k are at least ``r + 1`` columns apart: they never overlap.
So running the wavefronts in order, each as one batch, every window reads exactly the canvas
pixels it reads in row order, and every canvas pixel receives its blends in the same order:
the result equals the sequential one for the same seed (each window keeps its own generator),
again up to the floating-point effect of batching on the kernels. The scratch file records
finished windows, so a stopped batched run resumes like a sequential one.

The windows of one wavefront may also run elsewhere: a :class:`WindowExecutor` set with
:func:`window_executor` (engine.batch.scene_split puts them on Ray workers) gets each
wavefront's pending windows and returns their images; the driver blends and writes them into
the scratch as before. Without one, they run here (``pipe.inpaint_batch``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import numpy as np
import torch

from engine.geo.tiling import ScenePlan, TileWindow
from engine.model.device import UNET_ACTIVATION_BYTES_PER_LATENT_PX, free_memory
from engine.model.pipeline import stack_conditions

MAX_WINDOW_BATCH = 16  # beyond this a GPU gains nothing and previews/cancel get coarse
MEMORY_HEADROOM = 0.6  # of the free memory, for activations: the rest is for everything else


class WindowExecutor(Protocol):
    def outpaint(self, pipe, job, prompts: list[str], existing: list[np.ndarray],
                 masks: list[np.ndarray], seeds: list[int]) -> list[np.ndarray]:
        """The generated (H, W, 3) images of independent windows (one wavefront's), each
        from its own seed, as ``pipe.inpaint_batch`` with one window per call gives them."""


_EXECUTOR: ContextVar[WindowExecutor | None] = ContextVar("window_executor", default=None)


def current_executor() -> WindowExecutor | None:
    return _EXECUTOR.get()


@contextmanager
def window_executor(executor: WindowExecutor | None) -> Iterator[None]:
    """Outpainting scenes started inside run their wavefronts' windows on ``executor``."""
    token = _EXECUTOR.set(executor)
    try:
        yield
    finally:
        _EXECUTOR.reset(token)


def overlap_reach(plan: ScenePlan) -> int:
    """How many windows to each side a window overlaps (1 when overlap <= tile / 2)."""
    return max(1, math.ceil(plan.tile / plan.stride) - 1) if plan.overlap else 1


def wavefronts(plan: ScenePlan) -> list[list[TileWindow]]:
    """Windows grouped so that no two in a group touch and groups run in dependency order."""
    step = overlap_reach(plan) + 1
    groups: dict[int, list[TileWindow]] = {}
    for window in plan.windows():
        groups.setdefault(window.ix + step * window.iy, []).append(window)
    return [groups[k] for k in sorted(groups)]


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def window_batch_size(free_bytes: int | None, tile: int, dtype_bytes: int, cfg: bool,
                      limit: int = MAX_WINDOW_BATCH) -> int:
    """Windows per UNet call that fit in ``free_bytes`` (None: unknown, one at a time)."""
    if free_bytes is None or free_bytes <= 0:
        return 1
    latent_px = (tile // 8) ** 2
    per_window = UNET_ACTIVATION_BYTES_PER_LATENT_PX * latent_px * dtype_bytes / 4
    per_window *= 2 if cfg else 1
    return max(1, min(limit, int(free_bytes * MEMORY_HEADROOM // per_window)))


def batch_size_for(pipe, tile: int, cfg: bool, requested: int | None = None) -> int:
    """``requested`` if given, else what fits in the device's free memory now."""
    if requested is not None:
        return max(1, requested)
    dtype_bytes = torch.finfo(pipe.unet.dtype).bits // 8
    return window_batch_size(free_memory(pipe._execution_device), tile, dtype_bytes, cfg)


def joint_noise(pipe, latents: torch.Tensor, windows: list[TileWindow], offsets: Callable,
                lt: int, t, embeds_for: Callable[[TileWindow], torch.Tensor],
                labels: torch.Tensor | None, guidance: float) -> list[torch.Tensor]:
    """Guided noise predictions of ``windows`` (one UNet call), in the latents' dtype."""
    crops = []
    for w in windows:
        r, c = offsets(w)
        crops.append(latents[:, :, r : r + lt, c : c + lt])
    embeds, labels = stack_conditions([embeds_for(w) for w in windows], labels, guidance > 1.0)
    noise = pipe.predict_noise(torch.cat(crops), t, embeds, labels, guidance)
    return list(noise.split(1))
