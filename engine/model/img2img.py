"""Image-to-image (SDEdit) with the resolution level, in diffusers' img2img shape.

As StableDiffusionImg2ImgPipeline does: the scheduler's timesteps are cut by ``strength``
(get_timesteps: ``int(steps * strength)`` steps actually run, the last ones), the image is
VAE-encoded (times the scaling factor) and noised to the first kept timestep with the
scheduler's ``add_noise``, then the kept steps denoise it with the prompt, and the level as
``class_labels`` (level 0 with the empty prompt for the unconditional branch), exactly as
Text2EarthPipeline's text-to-image loop does. Random draws come in diffusers' order: the VAE's
sample of the image, then the noise (the inpainting model then samples its masked image too,
as StableDiffusionInpaintPipeline does with a strength below 1).

Strength 0 (or any strength that keeps no step) returns the input images as they are, without
calling any model: nothing is encoded, so nothing is lost to the VAE's round trip.

With the 9-channel inpainting model, ``masks`` (1 = regenerate, 0 = keep) reach the UNet as
in Text2EarthInpaintPipeline, so a window can keep what its neighbours made in their overlap.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from engine.errors import InputError
from engine.model.denoise import conditioned, denoise, guided, plain
from engine.model.latents import LATENT_DTYPE, encode, mask_conditioning, to_tensor
from engine.model.pipeline import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    StepCallback,
    Text2EarthOutput,
    Text2EarthPipeline,
    resolve_prompt_level,
)

Generators = torch.Generator | list[torch.Generator] | list[int] | int | None


def check_strength(strength: float) -> float:
    """``strength`` as a float in [0, 1], else InputError in a user's words."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise InputError(f"strength must be a number from 0 to 1, got {strength!r}") from None
    if not (np.isfinite(value) and 0.0 <= value <= 1.0):
        raise InputError(
            f"strength must be from 0 (keep the image) to 1 (ignore it), got {strength!r}"
        )
    return value


def kept_steps(steps: int, strength: float) -> int:
    """How many denoising steps run: diffusers' ``min(int(steps * strength), steps)``."""
    return min(int(steps * strength), steps)


def strength_timesteps(scheduler, steps: int, strength: float, device=None
                       ) -> tuple[torch.Tensor, int]:
    """(the timesteps that run, the index of the first in ``scheduler.timesteps``): diffusers'
    StableDiffusionImg2ImgPipeline.get_timesteps after ``set_timesteps(steps)``, including the
    scheduler's begin index (Euler and DPM-Solver count their steps from it)."""
    scheduler.set_timesteps(steps, device=device)
    t_start = max(steps - kept_steps(steps, strength), 0) * scheduler.order
    timesteps = scheduler.timesteps[t_start:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start)
    return timesteps, t_start


def generators_for(seeds: Generators, batch: int) -> torch.Generator | list | None:
    """One generator, or one per item (diffusers' convention); ints are seeds of CPU ones."""
    if isinstance(seeds, int):
        seeds = [seeds]
    if isinstance(seeds, list):
        gens = [torch.Generator("cpu").manual_seed(s) if isinstance(s, int) else s
                for s in seeds]
        if len(gens) == 1 and batch == 1:
            return gens[0]
        if len(gens) != batch:
            raise InputError(f"{len(gens)} generators for {batch} images")
        return gens
    return seeds


def noised_latents(pipe: Text2EarthPipeline, image: torch.Tensor, strength: float,
                   generator: Generators, scheduler=None, steps: int = DEFAULT_STEPS
                   ) -> torch.Tensor:
    """``image`` (B, 3, H, W) in [-1, 1] -> its latents noised to the first timestep kept by
    ``strength`` out of ``steps`` (sets the scheduler's timesteps, as strength_timesteps)."""
    scheduler = scheduler if scheduler is not None else pipe.scheduler
    device = pipe._execution_device
    generator = generators_for(generator, image.shape[0])
    timesteps, _ = strength_timesteps(scheduler, steps, check_strength(strength), device)
    if not len(timesteps):
        raise InputError(f"strength {strength} keeps no step of {steps}: nothing to noise")
    clean = encode(pipe, image, generator, per_item=True)
    noise = randn_tensor(clean.shape, generator=generator, device=device, dtype=LATENT_DTYPE)
    return scheduler.add_noise(clean, noise, timesteps[:1].repeat(clean.shape[0]))


@torch.no_grad()
def img2img_batch(
    pipe: Text2EarthPipeline,
    texts: list[str],
    images: list[np.ndarray],
    level: int,
    strength: float,
    negative_prompt: str | None = None,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    generators: Generators = None,
    masks: list[np.ndarray] | None = None,
    eta: float = 0.0,
    callback_on_step_end: StepCallback | None = None,
) -> Text2EarthOutput:
    """Several same-sized images (h, w, 3) uint8 restyled in one UNet batch, item k with
    ``texts[k]`` and its own generator (or one generator for all). ``masks`` (h, w) in [0, 1]
    only for the inpainting model (None: regenerate everything)."""
    strength = check_strength(strength)
    if not images or len(texts) != len(images):
        raise InputError(f"{len(texts)} prompts for {len(images)} images")
    for image in images:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"the image must be (height, width, 3) uint8, got {image.shape}")
        if image.shape != images[0].shape:
            raise InputError("the images of one batch must share one size")
    height, width = images[0].shape[:2]
    for text in texts:
        pipe.check_inputs(text, height, width, num_inference_steps, guidance_scale)
    inpainting = pipe.unet.config.in_channels == 9
    if masks is not None and not inpainting:
        raise InputError("masks need the inpainting checkpoint (a 9-channel UNet)")
    if inpainting and masks is None:
        masks = [np.ones((height, width), np.float32)] * len(images)
    if inpainting:
        for image, mask in zip(images, masks, strict=True):
            pipe.check_image_and_mask(image, mask)
    if kept_steps(num_inference_steps, strength) == 0:
        # Nothing to run: the input is the answer, bit for bit, and no model is called.
        return Text2EarthOutput(images=np.stack(images), level=level, prompt=texts[0])

    pipe.begin_run()
    generator = generators_for(generators, len(images))
    prompt_embeds, class_labels = pipe.condition_batch(texts, negative_prompt, level,
                                                       guidance_scale)
    pixels = to_tensor(images)
    # diffusers' draw order: the image's VAE sample, the noise, then the masked image's.
    latents = noised_latents(pipe, pixels, strength, generator, steps=num_inference_steps)
    timesteps, _ = strength_timesteps(pipe.scheduler, num_inference_steps, strength,
                                      pipe._execution_device)
    before_step = plain
    if inpainting:
        before_step = conditioned(mask_conditioning(pipe, pixels, masks, latents.shape[2:],
                                                    generator, guidance_scale > 1.0,
                                                    per_item=True))
    latents = denoise(pipe, latents, timesteps,
                      guided(pipe, prompt_embeds, class_labels, guidance_scale),
                      before_step=before_step,
                      step_kwargs=pipe.prepare_extra_step_kwargs(generator, eta),
                      callback=callback_on_step_end)
    out = pipe.decode(latents, generator)
    pipe.maybe_free_model_hooks()
    return Text2EarthOutput(images=out, level=level, prompt=texts[0])


def img2img(
    pipe: Text2EarthPipeline,
    prompt: str,
    image: np.ndarray,
    strength: float,
    level: int | None = None,
    negative_prompt: str | None = None,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    generator: torch.Generator | int | None = None,
    mask: np.ndarray | None = None,
    eta: float = 0.0,
    callback_on_step_end: StepCallback | None = None,
) -> Text2EarthOutput:
    """One image (h, w, 3) uint8 restyled: diffusers' img2img with the level (or the
    prompt's 17_GOOGLE_LEVEL_ prefix) as class_labels."""
    level, text = resolve_prompt_level(prompt, level)
    return img2img_batch(pipe, [text], [image], level, strength, negative_prompt,
                         num_inference_steps, guidance_scale, generator,
                         None if mask is None else [mask], eta, callback_on_step_end)
