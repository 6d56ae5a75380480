"""Which device runs the model, and how much memory it can still give."""

from __future__ import annotations

import os

import torch

from engine.errors import InputError

# Peak activation bytes of one UNet pass per latent pixel per batch row, in fp32, measured on
# the full-size Text2Earth UNet with PyTorch SDPA attention (no attention matrix held); half
# that in bf16/fp16. Conservative: the VAE decode of a window peaks lower per batch row.
UNET_ACTIVATION_BYTES_PER_LATENT_PX = 60_000


def select_device(name: str | None = None) -> tuple[torch.device, torch.dtype]:
    """auto: CUDA in fp16, else Apple MPS in fp16, else CPU in fp32 (the exact mode)."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), torch.float16
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps"), torch.float16
        return torch.device("cpu"), torch.float32
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                "device cuda was asked for, but torch sees no CUDA GPU (no NVIDIA driver, or a "
                "CPU-only torch build): use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"no GPU {device.index}: this machine has {torch.cuda.device_count()}")
        return device, torch.float16
    if device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("device mps was asked for, but Apple's MPS is not available here")
        return device, torch.float16
    if device.type == "cpu":
        return device, torch.float32
    raise InputError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")


def free_memory(device: torch.device) -> int | None:
    """Bytes the device can still give: CUDA's free memory, MemAvailable on a CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device.index or 0)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None  # MPS shares memory with the system and reports nothing useful
