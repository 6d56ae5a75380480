"""The one denoising loop, in the shape of diffusers' modular pipelines (their
modular_pipelines/stable_diffusion_xl/denoise.py): per timestep a before-denoiser step
(latents -> the model's input), the denoiser (the guided UNet call), and an after-denoiser
step (the scheduler's step, then what a method adds: re-imposing known latents, and always
the step callback and the cancel check of ``pipe.end_step``).

Text-to-image, image-to-image (timesteps cut by strength), inpainting (the 9-channel input),
candidates' batches, and the scene methods differ only in their hooks:
- ``before_step(i, t, latents) -> ModelInput``: the latents the UNet sees and the channels
  appended to them after the scheduler's input scaling (``conditioned``: the inpainting
  model's mask + masked-image latents);
- ``predict(model_input, t) -> noise``: the guided noise prediction, shaped as the latents
  (``guided``: ``pipe.predict_noise``, the one UNet call and the one guidance formula; joint
  denoising sums its windows' predictions into a canvas here);
- ``after_step(i, t, latents) -> latents``: after the scheduler's step (cascade: its known
  strips replaced by their latents noised to the next timestep).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch


class ModelInput(NamedTuple):
    latents: torch.Tensor  # N items, the scheduler's latents (or a view of them)
    conditioning: torch.Tensor | None = None  # appended channels (2N rows under guidance)


BeforeStep = Callable[[int, torch.Tensor, torch.Tensor], ModelInput]
Predict = Callable[[ModelInput, torch.Tensor], torch.Tensor]
AfterStep = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def plain(i: int, t: torch.Tensor, latents: torch.Tensor) -> ModelInput:
    """The default before-step: the model sees the latents as they are."""
    return ModelInput(latents)


def conditioned(conditioning: torch.Tensor) -> BeforeStep:
    """The inpainting model's before-step: the same extra channels at every step."""
    return lambda i, t, latents: ModelInput(latents, conditioning)


def guided(pipe, prompt_embeds: torch.Tensor, class_labels: torch.Tensor | None,
           guidance_scale: float) -> Predict:
    """The denoiser with classifier-free guidance: ``pipe.predict_noise``."""
    def predict(x: ModelInput, t: torch.Tensor) -> torch.Tensor:
        return pipe.predict_noise(x.latents, t, prompt_embeds, class_labels, guidance_scale,
                                  x.conditioning)

    return predict


def denoise(
    pipe,
    latents: torch.Tensor,
    timesteps: Sequence[torch.Tensor],
    predict: Predict,
    *,
    before_step: BeforeStep = plain,
    after_step: AfterStep | None = None,
    step_kwargs: dict | None = None,
    callback=None,
    callback_tensors: dict | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` over ``timesteps`` (the scheduler's, set beforehand, or their
    strength-cut tail) with ``pipe.scheduler``; returns the final latents.

    ``step_kwargs`` go to the scheduler's step (pipe.prepare_extra_step_kwargs); the step
    ``callback`` (diffusers' callback_on_step_end) gets {"latents": ..., **callback_tensors}
    after every step and may replace the latents or cancel. Latents stay in their dtype (fp32)
    throughout: only the UNet runs in the model's precision."""
    scheduler = pipe.scheduler
    step_kwargs = step_kwargs or {}
    extra = callback_tensors or {}
    for i, t in enumerate(timesteps):
        noise_pred = predict(before_step(i, t, latents), t)
        latents = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
        if after_step is not None:
            latents = after_step(i, t, latents)
        latents = pipe.end_step(callback, i, t, {"latents": latents, **extra},
                                len(timesteps))["latents"]
    return latents
