"""Text2EarthInpaintPipeline: the 9-channel inpainting/outpainting model, same level handling.

Mask convention as in diffusers and the authors' code: 1 (white) = regenerate, 0 = keep. The
UNet sees cat([latents, mask at latent size, VAE latents of the masked image]); the masked
image is ``image * (mask < 0.5)``. As in the authors' pipeline (its mask processor is built
with ``do_binarize=False``, unlike diffusers' stock inpainting pipeline) the mask is not
binarized: a soft mask's values reach the UNet's mask channel as they are. Random draws
happen in diffusers' order (the initial noise, then the VAE's sample of the masked image) so
a seed means the same as in StableDiffusionInpaintPipeline and the authors' fork of it.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.errors import InputError
from engine.model.denoise import conditioned, denoise, guided
from engine.model.latents import LATENT_DTYPE, mask_conditioning, to_tensor
from engine.model.pipeline import (
    StepCallback,
    Text2EarthOutput,
    Text2EarthPipeline,
    resolve_prompt_level,
)

DEFAULT_INPAINT_GUIDANCE = 3.5


class Text2EarthInpaintPipeline(Text2EarthPipeline):
    def check_image_and_mask(self, image: np.ndarray, mask: np.ndarray) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"the image must be (height, width, 3) uint8, got {image.shape}")
        if mask.shape != image.shape[:2]:
            raise InputError(f"the mask {mask.shape} does not match the image {image.shape[:2]}")
        if not (np.all(np.isfinite(mask)) and mask.min() >= 0 and mask.max() <= 1):
            # Not binarized, so a value outside [0, 1] would reach the UNet as it is.
            raise InputError("the mask's values must be in 0..1 (1 = regenerate)")
        if self.unet.config.in_channels != 9:
            raise InputError(
                "inpainting needs the 9-channel inpainting checkpoint "
                "(lcybuaa/Text2Earth-inpainting)"
            )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        image: np.ndarray,
        mask: np.ndarray,
        level: int | None = None,
        negative_prompt: str | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = DEFAULT_INPAINT_GUIDANCE,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        callback_on_step_end: StepCallback | None = None,
    ) -> Text2EarthOutput:
        """``image`` (h, w, 3) uint8, ``mask`` (h, w) in [0, 1] with 1 = regenerate."""
        level, text = resolve_prompt_level(prompt, level)
        return self.inpaint_batch([text], [image], [mask], level, negative_prompt,
                                  num_inference_steps, guidance_scale, [generator], eta,
                                  callback_on_step_end)

    @torch.no_grad()
    def inpaint_batch(
        self,
        texts: list[str],
        images: list[np.ndarray],
        masks: list[np.ndarray],
        level: int,
        negative_prompt: str | None,
        num_inference_steps: int,
        guidance_scale: float,
        generators: list[torch.Generator | None],
        eta: float = 0.0,
        callback_on_step_end: StepCallback | None = None,
    ) -> Text2EarthOutput:
        """Several same-sized inpaintings in one UNet batch (scene windows). Each item draws
        from its own generator in the order of a single run (noise, then the VAE's sample),
        so item k equals a run of item k alone up to the floating-point effect of batching.
        The step callback gets the whole batch's latents."""
        for image, mask in zip(images, masks, strict=True):
            self.check_image_and_mask(image, mask)
        height, width = masks[0].shape
        for text in texts:
            self.check_inputs(text, height, width, num_inference_steps, guidance_scale)
        self.begin_run()
        device = self._execution_device
        prompt_embeds, class_labels = self.condition_batch(texts, negative_prompt, level,
                                                           guidance_scale)
        generator = generators if len(generators) > 1 else generators[0]
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        # The initial noise first, then the VAE's sample of the masked image: diffusers' order.
        latents = self.prepare_latents(len(texts), self.num_channels_latents, height, width,
                                       LATENT_DTYPE, device, generator)
        conditioning = mask_conditioning(self, to_tensor(images), masks, latents.shape[2:],
                                         generator, guidance_scale > 1.0)
        latents = denoise(self, latents, self.scheduler.timesteps,
                          guided(self, prompt_embeds, class_labels, guidance_scale),
                          before_step=conditioned(conditioning),
                          step_kwargs=self.prepare_extra_step_kwargs(generator, eta),
                          callback=callback_on_step_end)
        images = self.decode(latents, generator)
        self.maybe_free_model_hooks()
        return Text2EarthOutput(images=images, level=level, prompt=texts[0])
