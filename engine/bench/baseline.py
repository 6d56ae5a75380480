"""The reference both benchmarks compare against: random weights of the real architecture and
the bare diffusers loop a user would write."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engine.model.checkpoint import Checkpoint, LoadedModel
from engine.model.device import select_device
from engine.model.pipeline import Text2EarthPipeline, make_scheduler
from engine.model.precision import part_dtypes

SIZE = 256
LEVEL = 17
GUIDANCE = 4.0


def build_model(full_size: bool, device: str | None, precision: str = "fp32") -> LoadedModel:
    """Random weights (seed 0: the same for every precision) of the real architecture."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from engine.model.tiny_checkpoint import (
        SCHEDULER_CONFIG,
        text_encoder_config,
        unet_config,
        vae_config,
        write_clip_tokenizer,
    )

    torch_device, _ = select_device(device)
    dtypes = part_dtypes(precision)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config(4, full_size=full_size))
    vae = AutoencoderKL(**vae_config(full_size))
    text_encoder = CLIPTextModel(text_encoder_config(full_size))
    with tempfile.TemporaryDirectory(prefix="t2e-bench-tok-") as folder:
        tokenizer = write_clip_tokenizer(Path(folder))
    pipe = Text2EarthPipeline(vae, text_encoder, tokenizer, unet,
                              make_scheduler("euler", SCHEDULER_CONFIG))
    for part in ("unet", "vae", "text_encoder"):
        getattr(pipe, part).to(torch_device, dtypes[part])
    name = "full-size" if full_size else "tiny"
    return LoadedModel(pipe, Checkpoint(Path("."), f"random {name}", "memory"), "n/a",
                       torch_device, dtypes["unet"], precision=precision)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it times the work (CUDA runs
    asynchronously; a CPU has nothing queued)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def bare_loop(pipe: Text2EarthPipeline, prompt: str, steps: int, seed: int,
              step_times: list | None = None, size: int = SIZE) -> np.ndarray:
    """What a user would write with diffusers' parts and nothing else (the reference
    arithmetic, in whatever dtype the modules are: fp16 modules give the fp16 eager run), for
    one ``size`` px square image."""
    device = pipe.device
    tok = pipe.tokenizer
    ids = tok([prompt, ""], padding="max_length", max_length=77, truncation=True,
              return_tensors="pt").input_ids.to(device)
    cond, uncond = pipe.text_encoder(ids)[0].chunk(2)
    embeds = torch.cat([uncond, cond])
    labels = torch.tensor([0.0, float(LEVEL)], device=device)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=device)
    generator = torch.Generator("cpu").manual_seed(seed)
    shape = (1, 4, size // 8, size // 8)
    latents = torch.randn(shape, generator=generator).to(device, embeds.dtype)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise = pipe.unet(x, t, encoder_hidden_states=embeds, class_labels=labels).sample
        u, c = noise.chunk(2)
        latents = scheduler.step(u + GUIDANCE * (c - u), t, latents).prev_sample
        if step_times is not None:
            sync(device)
            step_times.append(time.perf_counter())
    # Under fp16 the VAE stays fp32 (it overflows in fp16), as diffusers' force_upcast does.
    latents = latents.to(pipe.vae.dtype)
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    image = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
    return (image * 255).round().astype("uint8")[0]
