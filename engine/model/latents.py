"""Pixels to latents, once: the VAE encode (times the scaling factor) and the inpainting
model's mask conditioning (the mask at latent size + the masked image's latents).

Latents are held in LATENT_DTYPE (fp32) in every precision: only the VAE and the UNet run in
the model's precision, so the scheduler's arithmetic never piles up bf16/fp16 rounding.
"""

from __future__ import annotations

import numpy as np
import torch

LATENT_DTYPE = torch.float32


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """(h, w, 3) uint8 arrays -> (B, 3, h, w) in [-1, 1], contiguous NCHW (the layout picks
    the conv kernels, and with them the last bits of the result)."""
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return pixels.float() / 255.0 * 2.0 - 1.0


def encode(pipe, pixels: torch.Tensor, generator=None, *, per_item: bool = False,
           mode: bool = False) -> torch.Tensor:
    """VAE latents of ``pixels`` (B, 3, H, W in [-1, 1]) times the scaling factor, in
    LATENT_DTYPE: a sample of the latent distribution drawn from ``generator``, or its
    ``mode`` (no draw). ``per_item`` with a list of generators encodes item by item, as
    diffusers' img2img does; otherwise one VAE call for the batch (the list of generators
    then draws item by item all the same; only the conv kernels' batch size differs)."""
    pixels = pixels.to(device=pipe._execution_device, dtype=pipe.vae.dtype)
    if mode:
        latents = pipe.vae.encode(pixels).latent_dist.mode()
    elif per_item and isinstance(generator, list):
        latents = torch.cat([pipe.vae.encode(pixels[k : k + 1]).latent_dist.sample(g)
                             for k, g in enumerate(generator)])
    else:
        latents = pipe.vae.encode(pixels).latent_dist.sample(generator)
    return (pipe.vae.config.scaling_factor * latents).to(LATENT_DTYPE)


def mask_conditioning(pipe, pixels: torch.Tensor, masks: list[np.ndarray],
                      latent_size: tuple[int, int], generator, do_cfg: bool, *,
                      per_item: bool = False) -> torch.Tensor:
    """The 9-channel UNet's extra input channels: cat([mask at ``latent_size``, latents of
    ``pixels * (mask < 0.5)``]), twice the rows under guidance (both branches see them).
    ``masks`` (h, w) in [0, 1], 1 = regenerate, are not binarized (the authors' pipeline)."""
    mask = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
    masked = pixels * (mask < 0.5)
    mask_latent = torch.nn.functional.interpolate(mask, size=latent_size)
    mask_latent = mask_latent.to(pipe._execution_device, LATENT_DTYPE)
    masked_latents = encode(pipe, masked, generator, per_item=per_item)
    if do_cfg:
        mask_latent = torch.cat([mask_latent] * 2)
        masked_latents = torch.cat([masked_latents] * 2)
    return torch.cat([mask_latent, masked_latents], dim=1)
