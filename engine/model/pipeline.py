"""Text2EarthPipeline: Stable Diffusion 2 text-to-image plus the resolution level.

Written in diffusers' pipeline shape (check_inputs, encode_prompt, prepare_latents, a
denoising loop with step callbacks, decode) so that on the same weights, seed, size, scheduler,
level and guidance it reproduces the authors' reference pipeline (a diffusers fork): same
tokenisation, same latent draw order, same guidance arithmetic. The one addition to plain SD2
is the level, passed to the UNet as ``class_labels``: the prompt's level for the conditional
branch and level 0 ("unknown") for the unconditional one.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from engine.errors import GenerationCancelled, InputError
from engine.model.denoise import denoise, guided
from engine.model.latents import LATENT_DTYPE  # noqa: F401 (re-export)
from engine.model.memory_release import return_freed_heap
from engine.model.schedulers import DEFAULT_SCHEDULER, make_scheduler  # noqa: F401 (re-export)
from text2earth_qgis.core.contract.scale import LEVELS, UNKNOWN_LEVEL

LEVEL_PREFIX = re.compile(r"^\s*(\d+)_GOOGLE_LEVEL_")
DEFAULT_GUIDANCE = 4.0
DEFAULT_STEPS = 50

StepCallback = Callable[["Text2EarthPipeline", int, Any, dict], dict]


def stack_conditions(rows: list[torch.Tensor], labels: torch.Tensor | None, do_cfg: bool
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-item conditions ([uncond, cond] rows each, and labels [0, L]) as one batch laid out
    the way denoise() splits it: the N unconditional rows, then the N conditional ones."""
    if labels is not None:
        labels = labels.repeat_interleave(len(rows))
    if not do_cfg:
        return torch.cat(rows), labels
    return torch.cat([r[:1] for r in rows] + [r[1:] for r in rows]), labels


class PromptTruncatedWarning(UserWarning):
    """The prompt had more than CLIP's 77 tokens; the tail was dropped."""


def split_level_prefix(prompt: str) -> tuple[int | None, str]:
    """'17_GOOGLE_LEVEL_dense forest' -> (17, 'dense forest'); no prefix -> (None, prompt)."""
    match = LEVEL_PREFIX.match(prompt)
    if not match:
        return None, prompt
    return int(match.group(1)), prompt[match.end():]


def resolve_prompt_level(prompt: str, level: int | None) -> tuple[int, str]:
    """The level the UNet gets and the text CLIP sees, from an explicit level and/or the prefix."""
    prefix_level, text = split_level_prefix(prompt)
    if level is not None and prefix_level is not None and level != prefix_level:
        raise InputError(
            f"the prompt says level {prefix_level} (its _GOOGLE_LEVEL_ prefix) but level {level} "
            "was also given: keep one"
        )
    chosen = level if level is not None else prefix_level
    if chosen is None:
        chosen = UNKNOWN_LEVEL
    if chosen != UNKNOWN_LEVEL and chosen not in LEVELS:
        raise InputError(f"level {chosen} is outside the model's range {LEVELS[0]}..{LEVELS[-1]}")
    return chosen, text


@dataclass
class Text2EarthOutput:
    images: np.ndarray  # uint8, (batch, height, width, 3)
    level: int
    prompt: str  # what CLIP saw, level prefix removed


class Text2EarthPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self._interrupt = False
        self.set_progress_bar_config(disable=True)

    @property
    def has_level_embedding(self) -> bool:
        """Text2EarthUNet has a class embedding fed by the level; plain SD2 has none."""
        return getattr(self.unet.config, "class_embed_type", None) is not None

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def num_channels_latents(self) -> int:
        """Channels of the latents the scheduler steps (the VAE's; the inpainting UNet's input
        adds its mask and masked-image channels to these)."""
        return self.vae.config.latent_channels

    def cancel(self) -> None:
        """Stop at the end of the current step (callable from a step callback or another thread)."""
        self._interrupt = True

    def begin_run(self) -> None:
        """Forget a cancel() of an earlier run, as diffusers' __call__ does at its start."""
        self._interrupt = False

    def end_step(self, callback: StepCallback | None, i: int, t, tensors: dict,
                 steps: int) -> dict:
        """After every denoising step, in diffusers' order: the step callback (it may return
        replacement tensors, or call cancel()), then the stop if cancelled."""
        if callback is not None:
            tensors = {**tensors, **(callback(self, i, t, tensors) or {})}
        if self._interrupt:
            raise GenerationCancelled(f"cancelled after step {i + 1} of {steps}")
        return tensors

    def use_scheduler(self, name: str) -> None:
        self.scheduler = make_scheduler(name, self.scheduler.config)

    def check_inputs(self, prompt: str, height: int, width: int, steps: int, guidance: float):
        if not isinstance(prompt, str):
            raise InputError("the prompt must be text")
        for name, side in (("height", height), ("width", width)):
            if side <= 0 or side % self.vae_scale_factor:
                raise InputError(
                    f"{name} must be a positive multiple of {self.vae_scale_factor}, got {side}"
                )
        if not isinstance(steps, int) or steps < 1 or steps > 1000:
            raise InputError(f"steps must be an integer in 1..1000, got {steps!r}")
        if not np.isfinite(guidance) or guidance < 0:
            raise InputError(f"guidance must be a number >= 0, got {guidance!r}")

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return ids

    def encode_prompt(
        self, prompt: str, negative_prompt: str | None, device, do_cfg: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = self._tokenize([prompt])
        full = self.tokenizer([prompt], padding="longest", return_tensors="pt").input_ids
        if full.shape[-1] > ids.shape[-1]:
            dropped = self.tokenizer.batch_decode(full[:, self.tokenizer.model_max_length - 1 : -1])
            shown = dropped[0] if len(dropped[0]) <= 60 else dropped[0][:57] + "..."
            warnings.warn(  # one short line: the tail may be thousands of characters
                f"the prompt is longer than CLIP's {self.tokenizer.model_max_length} tokens; "
                f"{len(dropped[0])} characters from {shown!r} on were dropped",
                PromptTruncatedWarning,
                stacklevel=3,
            )
        encoder_dtype = self.text_encoder.dtype
        embeds = self.text_encoder(ids.to(device))[0].to(encoder_dtype)
        if not do_cfg:
            return embeds, None
        neg_ids = self._tokenize([negative_prompt or ""])
        negative = self.text_encoder(neg_ids.to(device))[0].to(encoder_dtype)
        return embeds, negative

    def condition(self, text: str, negative_prompt: str | None, level: int,
                  guidance_scale: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(text embeddings, class_labels) for the UNet batch: [unconditional, conditional]
        under guidance, i.e. [(negative or empty prompt, level 0), (prompt, level)]."""
        device = self._execution_device
        do_cfg = guidance_scale > 1.0
        embeds, negative = self.encode_prompt(text, negative_prompt, device, do_cfg)
        if do_cfg:
            embeds = torch.cat([negative, embeds])
        # The text encoder may run in another precision than the UNet (engine.model.precision).
        return embeds.to(self.unet.dtype), self.level_labels(level, do_cfg, device)

    def condition_batch(self, texts: list[str], negative_prompt: str | None, level: int,
                        guidance_scale: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """condition() for a batch of windows, laid out as denoise() splits it: the N
        unconditional rows, then the N conditional ones. Each distinct text is encoded once."""
        by_text: dict[str, torch.Tensor] = {}
        for text in texts:
            if text not in by_text:
                by_text[text] = self.condition(text, negative_prompt, level, guidance_scale)[0]
        do_cfg = guidance_scale > 1.0
        labels = self.level_labels(level, do_cfg, self._execution_device)
        return stack_conditions([by_text[text] for text in texts], labels, do_cfg)

    def prepare_latents(self, batch_size: int, num_channels_latents: int, height: int,
                        width: int, dtype, device, generator, latents=None) -> torch.Tensor:
        """The initial latents, scaled for the scheduler (call after set_timesteps): drawn
        as diffusers draws them (one generator, or one per batch item), or ``latents`` given."""
        shape = (batch_size, num_channels_latents, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device)
        return latents * self.scheduler.init_noise_sigma

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict:
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    def level_labels(self, level: int, do_cfg: bool, device) -> torch.Tensor | None:
        """class_labels for the UNet batch: [0 (unconditional), level] with guidance."""
        if not self.has_level_embedding:
            return None
        values = [float(UNKNOWN_LEVEL), float(level)] if do_cfg else [float(level)]
        return torch.tensor(values, device=device)

    def predict_noise(
        self,
        latents: torch.Tensor,
        t,
        prompt_embeds: torch.Tensor,
        class_labels: torch.Tensor | None,
        guidance_scale: float,
        conditioning: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The guided noise prediction for ``latents`` (N items) at timestep ``t``: one UNet
        call. Under guidance the UNet batch is the N items twice, matching ``prompt_embeds``
        and ``class_labels`` laid out as condition()/condition_batch() make them (the N
        unconditional rows, then the N conditional ones), and the result is
        ``uncond + g * (cond - uncond)``. ``conditioning`` (2N rows under guidance) is
        appended to the UNet's input channels. The UNet runs in its dtype; the prediction
        comes back in the latents' dtype."""
        do_cfg = guidance_scale > 1.0
        unet_dtype = self.unet.dtype
        model_input = torch.cat([latents] * 2) if do_cfg else latents
        model_input = self.scheduler.scale_model_input(model_input, t).to(unet_dtype)
        if conditioning is not None:
            model_input = torch.cat([model_input, conditioning.to(unet_dtype)], dim=1)
        noise_pred = self.unet(
            model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            class_labels=class_labels,
            return_dict=False,
        )[0].to(latents.dtype)
        if do_cfg:
            uncond, cond = noise_pred.chunk(2)
            noise_pred = uncond + guidance_scale * (cond - uncond)
        return noise_pred

    def text_to_image(self, prompt_embeds: torch.Tensor, class_labels: torch.Tensor | None,
                      count: int, height: int, width: int, steps: int, guidance_scale: float,
                      generator, latents: torch.Tensor | None = None, eta: float = 0.0,
                      callback: StepCallback | None = None) -> np.ndarray:
        """``count`` images from noise (one generator, or one per image) under conditions
        laid out as condition()/condition_batch() make them: uint8 (count, height, width, 3)."""
        self.scheduler.set_timesteps(steps, device=self._execution_device)
        latents = self.prepare_latents(count, self.num_channels_latents, height, width,
                                       LATENT_DTYPE, self._execution_device, generator, latents)
        latents = denoise(self, latents, self.scheduler.timesteps,
                          guided(self, prompt_embeds, class_labels, guidance_scale),
                          step_kwargs=self.prepare_extra_step_kwargs(generator, eta),
                          callback=callback)
        return self.decode(latents, generator)

    def decode(self, latents: torch.Tensor, generator=None) -> np.ndarray:
        return_freed_heap()  # the loop's freed memory, before the decode's peak adds to it
        latents = (latents / self.vae.config.scaling_factor).to(self.vae.dtype)
        image = self.vae.decode(latents, return_dict=False, generator=generator)[0]
        image = self.image_processor.postprocess(image, output_type="np")
        # The same rounding as diffusers' numpy_to_pil, so pixels match PIL outputs exactly.
        return (image * 255).round().astype("uint8")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        level: int | None = None,
        negative_prompt: str | None = None,
        height: int = 256,
        width: int = 256,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        eta: float = 0.0,
        callback_on_step_end: StepCallback | None = None,
    ) -> Text2EarthOutput:
        level, text = resolve_prompt_level(prompt, level)
        self.check_inputs(text, height, width, num_inference_steps, guidance_scale)
        self.begin_run()
        prompt_embeds, class_labels = self.condition(text, negative_prompt, level, guidance_scale)
        images = self.text_to_image(prompt_embeds, class_labels, 1, height, width,
                                    num_inference_steps, guidance_scale, generator, latents,
                                    eta, callback_on_step_end)
        self.maybe_free_model_hooks()
        return Text2EarthOutput(images=images, level=level, prompt=text)
