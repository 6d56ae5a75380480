"""Coarse-to-fine scenes (``--scene-method cascade``), after MetaEarth's resolution-guided
self-cascading: the whole extent first at a coarse level (one or two windows: the layout of
rivers, roads and districts is decided where one window sees all of it), then each finer level
up to the target by image-to-image (SDEdit, engine.model.img2img) from the coarser result
upsampled onto that level's grid. The ladder (levels, strengths, grids) is planned by
engine.scenes.ladder and written into the tags.

Overlaps: each level is built window by window in the outpainting schedule (wavefronts of
engine.scenes.window_batch, several windows per UNet call). Where a window overlaps windows
already refined (above, left), their pixels are its context: at every step the latents of
that strip are replaced by the strip's own latents noised to the step (the way diffusers'
4-channel inpainting keeps a known region), and the strip is feathered in pixel space as
outpainting does. Chosen over joint denoising (MultiDiffusion, averaging overlapping
windows' latents every step) because windows stay independent within a wavefront: a stopped
cascade resumes window by window, memory stays bounded, and the wavefronts can go to several
workers; the seams have less to hide than in a plain outpainted scene, since both sides of a
border start from the same upsampled coarser level. Chosen over the 9-channel inpainting
model because image-to-image runs on the text-to-image model: a cascade needs one
checkpoint, for its coarse pass too.

Every level's canvas is an uncompressed GeoTIFF on the level's own grid (the target level's
is the scene's store, engine.scenes.store); each window's init is read from the coarser
level's canvas and resampled by GDAL (rasterio, cubic) onto the window's pixels, mirrored at
the coarser canvas's edges. Deterministic for a seed: each window draws from a generator
seeded from the seed, its level and its position. Resume: the target level records its
finished windows in the scene's journal like outpainting; a resumed cascade redoes its
coarser levels (the same pixels again, a fraction of the work: their stores keep no journal)
and then only the target level's missing windows.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from diffusers.utils.torch_utils import randn_tensor
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from engine.geo.geotiff import scratch_profile, temp_stem
from engine.geo.tiling import canvas_transform, outpaint_mask, tile_seed
from engine.model import img2img
from engine.model.denoise import denoise, guided
from engine.model.latents import LATENT_DTYPE, encode, to_tensor
from engine.model.pipeline import resolve_prompt_level
from engine.scenes.job import SceneCallback, SceneJob, as_image, feathered_writes, tile_window
from engine.scenes.ladder import Ladder, Rung
from engine.scenes.store import WindowStore, run_windows
from engine.scenes.window_batch import batch_size_for, wavefronts

RESAMPLING = Resampling.cubic
EDGE = 4  # source pixels beyond a window read for the resampling kernel


def level_seed(seed: int, level: int) -> int:
    """The seed of one level's windows (each window then gets its tile_seed from it)."""
    digest = hashlib.sha256(f"text2earth-cascade:{seed}:{level}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def upsampled(source: Path, dst_transform: Affine, size: int) -> np.ndarray:
    """The coarser canvas ``source`` resampled onto ``size`` x ``size`` pixels at
    ``dst_transform`` (same CRS), as (size, size, 3) float32 in 0..255. Pixels past the
    source's edges mirror it (a finer canvas's margin may reach a little past a coarser one)."""
    with rasterio.open(source) as src:
        inverse = ~src.transform
        points = [inverse * (dst_transform * (c, r)) for c in (0, size) for r in (0, size)]
        c0 = min(math.floor(min(p[0] for p in points)) - EDGE, src.width - 1)
        c1 = max(math.ceil(max(p[0] for p in points)) + EDGE, 1)
        r0 = min(math.floor(min(p[1] for p in points)) - EDGE, src.height - 1)
        r1 = max(math.ceil(max(p[1] for p in points)) + EDGE, 1)
        rc0, rc1 = max(c0, 0), min(c1, src.width)
        rr0, rr1 = max(r0, 0), min(r1, src.height)
        block = src.read(window=Window(rc0, rr0, rc1 - rc0, rr1 - rr0)).astype(np.float32)
        crs, transform = src.crs, src.transform
    block = np.pad(block, ((0, 0), (rr0 - r0, r1 - rr1), (rc0 - c0, c1 - rc1)), mode="symmetric")
    out = np.zeros((block.shape[0], size, size), np.float32)
    reproject(block, out, src_transform=transform * Affine.translation(c0, r0), src_crs=crs,
              dst_transform=dst_transform, dst_crs=crs, resampling=RESAMPLING)
    return np.clip(np.moveaxis(out, 0, 2), 0, 255)


def progress_steps(ladder: Ladder, steps: int) -> int:
    """Step callbacks a cascade makes: one per window and denoising step actually run."""
    return sum(r.plan.nx * r.plan.ny * (steps if i == 0 else img2img.kept_steps(steps, r.strength))
               for i, r in enumerate(ladder.rungs))


@torch.no_grad()
def refine(pipe, texts: list[str], inits: list[np.ndarray] | None, context: list[np.ndarray],
           masks: list[np.ndarray], strength: float, level: int, job: SceneJob,
           generators: list[torch.Generator], on_step) -> np.ndarray:
    """One UNet batch of windows: generated from noise (``inits`` None: the coarse pass) or
    image-to-image from ``inits`` at ``strength``; where ``masks`` are 0 the windows keep
    ``context`` (pixels already made). Returns (B, tile, tile, 3) uint8."""
    device = pipe._execution_device
    scheduler = pipe.scheduler
    if inits is not None and img2img.kept_steps(job.steps, strength) == 0:
        return np.stack(inits)  # nothing to redo: the init as it is, no model call
    embeds, labels = pipe.condition_batch(texts, job.negative_prompt, level, job.guidance)
    generator = generators if len(generators) > 1 else generators[0]
    size = masks[0].shape[0]
    if inits is None:
        scheduler.set_timesteps(job.steps, device=device)
        timesteps = scheduler.timesteps
        latents = pipe.prepare_latents(len(texts), pipe.num_channels_latents, size, size,
                                       LATENT_DTYPE, device, generator)
    else:
        latents = img2img.noised_latents(pipe, to_tensor(inits), strength, generator,
                                         scheduler, job.steps)
        timesteps, _ = img2img.strength_timesteps(scheduler, job.steps, strength, device)
    after_step = None
    if min(m.min() for m in masks) < 0.5:
        known = encode(pipe, to_tensor(context), mode=True)
        noise = randn_tensor(known.shape, generator=generator, device=device, dtype=LATENT_DTYPE)
        new = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
        new = torch.nn.functional.interpolate(new, size=latents.shape[2:]).to(device)

        def after_step(i, t, latents):  # known strips noised to the next step, clean at the end
            last = i == len(timesteps) - 1
            proper = known if last else scheduler.add_noise(known, noise, timesteps[i + 1 : i + 2])
            return new * latents + (1.0 - new) * proper

    latents = denoise(pipe, latents, timesteps, guided(pipe, embeds, labels, job.guidance),
                      after_step=after_step, callback=on_step)
    return pipe.decode(latents)


def _run_level(pipe, job: SceneJob, rung: Rung, canvas: WindowStore, coarser: Path | None,
               first_tile: int, tiles: int, callback: SceneCallback | None) -> None:
    plan = rung.plan
    transform = canvas_transform(plan, rung.grid.transform)
    seed = level_seed(job.seed, rung.level)
    size = batch_size_for(pipe, plan.tile, job.guidance > 1.0, job.window_batch)
    def compute(group):
        context = [as_image(canvas.read(window=tile_window(w))) for w in group]
        inits = None if coarser is None else [np.rint(
            upsampled(coarser, transform * Affine.translation(w.col, w.row), plan.tile)
        ).astype(np.uint8) for w in group]

        def on_step(p, i, t, tensors):
            if callback is not None:  # per window, as if they had run one by one
                for k, w in enumerate(group):
                    callback(p, i, t, {**tensors, "latents": tensors["latents"][k : k + 1],
                                       "tile": first_tile + w.index, "tiles": tiles})
            return tensors

        images = refine(
            pipe,
            [resolve_prompt_level((rung.prompts or {}).get(w.key, job.prompt),
                                  rung.level)[1] for w in group],
            inits, context, [outpaint_mask(plan, w) for w in group], rung.strength,
            rung.level, job,
            [torch.Generator("cpu").manual_seed(tile_seed(seed, w.ix, w.iy)) for w in group],
            on_step)
        return feathered_writes(plan, group, images, context)

    run_windows(canvas, wavefronts(plan), compute, size)


def run_cascade(pipe, job: SceneJob, store: WindowStore, callback: SceneCallback | None) -> None:
    """Every level of ``job.ladder`` in turn; the target level into the scene's ``store``
    (resumed from its done windows), the coarser ones into stores of their own, removed at
    the end."""
    ladder: Ladder = job.ladder
    pipe.begin_run()
    final = ladder.rungs[-1]
    if len(store.done) >= final.plan.nx * final.plan.ny:
        return  # every target window is in the scratch: only the output is left to write
    coarser: WindowStore | None = None
    first_tile = 1
    levels: list[WindowStore] = []
    try:
        for rung in ladder.rungs:
            if rung is final:
                canvas = store
            else:
                path = temp_stem(job.out.parent).with_suffix(f".level{rung.level}.tif")
                canvas = WindowStore.fresh(store.folder, path, scratch_profile(
                    rung.plan.canvas_width, rung.plan.canvas_height, rung.grid.crs,
                    canvas_transform(rung.plan, rung.grid.transform)))
                levels.append(canvas)
            _run_level(pipe, job, rung, canvas, None if coarser is None else coarser.path,
                       first_tile, ladder.windows, callback)
            if coarser is not None:
                coarser.remove()
            coarser = canvas
            first_tile += rung.plan.nx * rung.plan.ny
    finally:
        for level in levels:
            level.remove()
