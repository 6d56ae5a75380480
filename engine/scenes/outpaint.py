"""Outpainting scenes (the inpainting checkpoint, the authors' "unbounded scene
construction"): windows in wavefront order, each conditioned on the strips it shares with
windows already made (kept), generating the rest with the same prompt and level; the shared
strips are feathered. Resumable window group by window group (engine.scenes.store's
run_windows)."""

from __future__ import annotations

import torch

from engine.geo.tiling import ScenePlan, outpaint_mask, tile_seed
from engine.model.pipeline import resolve_prompt_level
from engine.scenes.job import SceneCallback, SceneJob, as_image, feathered_writes, tile_window
from engine.scenes.store import WindowStore, run_windows
from engine.scenes.window_batch import batch_size_for, current_executor, wavefronts


def run_outpaint(pipe, job: SceneJob, plan: ScenePlan, store: WindowStore,
                 callback: SceneCallback | None) -> None:
    """Windows by wavefront, several per UNet call: the same result as row order (see
    engine.scenes.window_batch for why), each window seeded from its position."""
    windows = plan.windows()
    fronts = wavefronts(plan)
    executor = current_executor()  # elsewhere (Ray workers): a whole wavefront at a time
    size = (max(map(len, fronts)) if executor is not None
            else batch_size_for(pipe, plan.tile, job.guidance > 1.0, job.window_batch))

    def compute(group):
        existing = [as_image(store.read(window=tile_window(w))) for w in group]

        def on_step(p, i, t, tensors):
            if callback is not None:  # per window, as if they had run one by one
                for k, w in enumerate(group):
                    callback(p, i, t, {**tensors, "latents": tensors["latents"][k : k + 1],
                                       "tile": w.index + 1, "tiles": len(windows)})
            return tensors

        prompts = [resolve_prompt_level((job.prompts or {}).get(w.key, job.prompt),
                                        job.level)[1] for w in group]
        masks = [outpaint_mask(plan, w) for w in group]
        seeds = [tile_seed(job.seed, w.ix, w.iy) for w in group]
        if executor is not None:
            images = executor.outpaint(pipe, job, prompts, existing, masks, seeds)
        else:
            images = pipe.inpaint_batch(
                prompts, existing, masks, job.level, job.negative_prompt, job.steps,
                job.guidance, [torch.Generator("cpu").manual_seed(s) for s in seeds],
                callback_on_step_end=on_step,
            ).images
        return feathered_writes(plan, group, images, existing)

    run_windows(store, fronts, compute, size)
