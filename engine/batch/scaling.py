"""A scaling model on paper for one huge outpainted scene over G GPUs (docs/scaling.md).

The windows of one wavefront run in parallel (engine.scenes.window_batch); wavefronts run one
after the other, and the driver reads, blends and writes every window into the scratch raster
itself. So, with ``n_k`` windows in wavefront k, ``t_w`` seconds per window on one GPU,
``t_io`` seconds of driver work per window and ``t_rt`` seconds of scheduling round trip per
wavefront:

    T(G) = sum_k ( ceil(n_k / G) * t_w  +  n_k * t_io  +  t_rt )

Two things keep it from being linear: a wavefront never has more than about ``ny / 2``
windows (``k = ix + 2 iy``: about half a column), so GPUs beyond that idle, and a wavefront
whose size is not a multiple of G leaves GPUs idle in its last round; the driver's
``n_k * t_io`` is serial (Amdahl).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.geo.tiling import plan_scene

CITY_PIXELS = 1.6e9  # a city at level 18 (~0.6 m/px): about 24 x 24 km
# NOT measured: an assumption for one H100 (SXM, fp16, SD2-class 865 M-parameter UNet, 512 px
# window, 50 steps with classifier-free guidance, i.e. 100 UNet evaluations at batch 1),
# from the order of magnitude public SD 2.x benchmarks give; replace with a measured figure
# (`python -m engine.bench --gpu`) when a GPU is lent.
H100_WINDOW_S_ASSUMED = 1.5
ROUND_TRIP_S = 0.005  # Ray's scheduling of one wavefront's tasks and their results


def wavefront_sizes(width: int, height: int, tile: int = 512, overlap: int = 64) -> list[int]:
    """Windows per wavefront of the scene's plan (the same grouping as window_batch)."""
    from engine.scenes.window_batch import wavefronts

    return [len(front) for front in wavefronts(plan_scene(width, height, tile, overlap))]


def city_side(pixels: float = CITY_PIXELS) -> int:
    return int(math.sqrt(pixels))


@dataclass(frozen=True)
class ScalingRow:
    gpus: int
    seconds: float
    linear_seconds: float  # one GPU's time / G

    @property
    def speedup(self) -> float:
        return self.linear_seconds * self.gpus / self.seconds

    @property
    def efficiency(self) -> float:
        return self.speedup / self.gpus


def scene_seconds(sizes: list[int], gpus: int, window_s: float, io_s: float = 0.0,
                  round_trip_s: float = ROUND_TRIP_S) -> float:
    rounds = sum(math.ceil(n / gpus) for n in sizes)
    return rounds * window_s + sum(sizes) * io_s + len(sizes) * round_trip_s


def scaling_table(sizes: list[int], window_s: float, io_s: float = 0.0,
                  gpus: tuple[int, ...] = (1, 8, 64)) -> list[ScalingRow]:
    one = scene_seconds(sizes, 1, window_s, io_s)
    return [ScalingRow(g, scene_seconds(sizes, g, window_s, io_s), one / g) for g in gpus]


def format_table(rows: list[ScalingRow], label: str) -> str:
    lines = [label, f"  {'GPUs':>5}  {'time':>10}  {'linear':>10}  {'speedup':>8}  "
                    f"{'efficiency':>10}"]
    for r in rows:
        lines.append(f"  {r.gpus:>5}  {_hours(r.seconds):>10}  {_hours(r.linear_seconds):>10}  "
                     f"{r.speedup:>7.1f}x  {r.efficiency:>9.0%}")
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
