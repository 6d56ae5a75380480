"""Joint denoising (only the text-to-image checkpoint): MultiDiffusion-style, at every step
each window's noise prediction is averaged, with feathered weights, into one latent canvas
(1/64 of the pixels, 4 channels: the only canvas-sized thing held). Not resumable: the
latents live in memory until the end; the windows' cores are decoded into the store."""

from __future__ import annotations

import torch
from rasterio.windows import Window

from engine.errors import GenerationCancelled
from engine.geo.tiling import ScenePlan, joint_weights, tile_seed
from engine.model.denoise import ModelInput, denoise
from engine.model.latents import LATENT_DTYPE
from engine.scenes.job import SceneCallback, SceneJob, as_bands
from engine.scenes.store import WindowStore
from engine.scenes.window_batch import batch_size_for, chunks, joint_noise


@torch.no_grad()
def run_joint(pipe, job: SceneJob, plan: ScenePlan, store: WindowStore,
              callback: SceneCallback | None) -> None:
    device = pipe._execution_device
    pipe.begin_run()
    do_cfg = job.guidance > 1.0
    by_prompt: dict[str, torch.Tensor] = {}

    def embeds_for(prompt: str) -> torch.Tensor:
        if prompt not in by_prompt:
            by_prompt[prompt] = pipe.condition(prompt, job.negative_prompt, job.level,
                                               job.guidance)[0]
        return by_prompt[prompt]

    labels = pipe.level_labels(job.level, do_cfg, device)
    f = pipe.vae_scale_factor
    lt, ls = plan.tile // f, plan.stride // f
    windows = plan.windows()

    # Initial noise cell by cell from each window's seed: the same position, the same noise.
    channels = pipe.num_channels_latents
    draw = torch.empty((1, channels, plan.canvas_height // f, plan.canvas_width // f),
                       dtype=LATENT_DTYPE)
    for w in windows:
        r0, c0 = w.iy * ls, w.ix * ls
        r1 = draw.shape[2] if w.iy == plan.ny - 1 else r0 + ls
        c1 = draw.shape[3] if w.ix == plan.nx - 1 else c0 + ls
        gen = torch.Generator("cpu").manual_seed(tile_seed(job.seed, w.ix, w.iy))
        draw[:, :, r0:r1, c0:c1] = torch.randn((1, channels, r1 - r0, c1 - c0),
                                               generator=gen, dtype=LATENT_DTYPE)
    pipe.scheduler.set_timesteps(job.steps, device=device)
    latents = pipe.prepare_latents(1, channels, plan.canvas_height, plan.canvas_width,
                                   LATENT_DTYPE, device, None, latents=draw)
    weight = torch.from_numpy(joint_weights(lt, plan.overlap // f)).to(device, LATENT_DTYPE)
    groups = chunks(windows, batch_size_for(pipe, plan.tile, do_cfg, job.window_batch))

    def offsets(w) -> tuple[int, int]:
        return w.iy * ls, w.ix * ls

    def window_embeds(w) -> torch.Tensor:
        return embeds_for((job.prompts or {}).get(w.key, job.prompt))

    def canvas_noise(x: ModelInput, t) -> torch.Tensor:
        total = torch.zeros_like(x.latents)
        weights = torch.zeros_like(x.latents[:, :1])
        for group in groups:  # several windows per UNet call; sums in window order as before
            noises = joint_noise(pipe, x.latents, group, offsets, lt, t, window_embeds, labels,
                                 job.guidance)
            for w, noise in zip(group, noises, strict=True):
                r, c = offsets(w)
                total[:, :, r : r + lt, c : c + lt] += noise * weight
                weights[:, :, r : r + lt, c : c + lt] += weight
        return total / weights

    # All windows advance together: one pass over the canvas, reported as one tile.
    latents = denoise(pipe, latents, pipe.scheduler.timesteps, canvas_noise, callback=callback,
                      callback_tensors={"tile": 1, "tiles": 1})

    # Decode window by window; each writes only its core, and the cores tile the canvas.
    for w in windows:
        if pipe.interrupt:
            raise GenerationCancelled("cancelled while decoding")
        r, c = w.iy * ls, w.ix * ls
        image = pipe.decode(latents[:, :, r : r + lt, c : c + lt])[0]
        col0, row0, col1, row1 = plan.core(w)
        core = image[row0 - w.row : row1 - w.row, col0 - w.col : col1 - w.col]
        store.commit([(w.key, Window(col0, row0, col1 - col0, row1 - row0), as_bands(core))])


def core_windows(plan: ScenePlan) -> list[Window]:
    """The rectangles joint denoising writes (the cores tile the canvas)."""
    out = []
    for w in plan.windows():
        col0, row0, col1, row1 = plan.core(w)
        out.append(Window(col0, row0, col1 - col0, row1 - row0))
    return out
