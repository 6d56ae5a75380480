"""Which arithmetic a model runs in: ``--precision auto|fp32|bf16|fp16``.

``auto`` is a pure function of facts about the device (:class:`DeviceFacts`), gathered once at
the edge (:func:`device_facts`):
- CUDA: fp16, the format every NVIDIA card since Volta runs on its tensor cores;
- Apple MPS: bf16 where the OS/GPU run it (macOS 14+ on M2 and later), else fp16;
- CPU: bf16 where the cores have native bf16 dot products (x86 avx512_bf16 / AMX-BF16,
  Arm bf16 / FEAT_BF16), which halves the memory traffic and doubles the matmul rate; else fp32.

fp32 is the exact mode: it reproduces the reference pipeline's pixels. fp16 is refused on CPU:
PyTorch's CPU kernels for half are slow or missing for several ops on most CPUs, and any CPU
with fast fp16 (AVX512-FP16, AMX-FP16) has bf16 too, which has fp32's range.

Per part (:func:`part_dtypes`): the UNet takes the chosen dtype; the text encoder follows
(CLIP is safe in fp16 and bf16); the SD2 VAE overflows in fp16 (NaNs or black tiles) and so
stays fp32 under fp16 (diffusers' ``force_upcast``), while bf16, with fp32's exponent range,
is safe for it. Latents and scheduler arithmetic stay fp32 in every mode (see pipeline).
"""

from __future__ import annotations

import os
import platform
import subprocess  # nosec B404 - one fixed argv (sysctl) on macOS
from dataclasses import dataclass, field

import torch

from engine.errors import InputError

AUTO, FP32, BF16, FP16 = "auto", "fp32", "bf16", "fp16"
PRECISIONS = (AUTO, FP32, BF16, FP16)
DTYPES = {FP32: torch.float32, BF16: torch.bfloat16, FP16: torch.float16}
# Replaces the CPU's own flags (device_facts): what another machine's `auto` would pick.
CPU_FLAGS_ENV = "TEXT2EARTH_CPU_FLAGS"
# CPU feature names (Linux /proc/cpuinfo, macOS sysctl) meaning native bf16 dot products.
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16", "FEAT_BF16"})


@dataclass(frozen=True)
class DeviceFacts:
    type: str  # "cpu", "cuda" or "mps"
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    mps_bf16: bool = False  # the MPS backend accepts bfloat16 tensors (macOS 14+)


def cpu_has_native_bf16(flags: frozenset[str]) -> bool:
    return bool(NATIVE_BF16_CPU_FLAGS & flags)


def auto_precision(facts: DeviceFacts) -> str:
    """The precision the device runs well (see the module's docstring)."""
    if facts.type == "cuda":
        return FP16
    if facts.type == "mps":
        return BF16 if facts.mps_bf16 else FP16
    return BF16 if cpu_has_native_bf16(facts.cpu_flags) else FP32


def resolve_precision(requested: str | None, facts: DeviceFacts) -> str:
    """``requested`` (None means auto) checked against the device: fp32, bf16 or fp16."""
    name = (requested or AUTO).strip().lower()
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {requested!r}: choose {', '.join(PRECISIONS)}")
    if name == AUTO:
        return auto_precision(facts)
    if name == FP16 and facts.type == "cpu":
        advice = "bf16 (native on this CPU)" if cpu_has_native_bf16(facts.cpu_flags) else "fp32"
        raise InputError(
            "fp16 runs on GPUs only: PyTorch's CPU half-precision kernels are slow or missing; "
            f"use --precision {advice.split()[0]} here ({advice}) or auto"
        )
    if name == BF16 and facts.type == "mps" and not facts.mps_bf16:
        raise InputError("this Mac's MPS backend has no bf16 (it needs macOS 14 and an M2 or "
                         "later): use fp16, fp32 or auto")
    return name


def part_dtypes(precision: str) -> dict[str, torch.dtype]:
    """dtype of each model part under a resolved precision."""
    dtype = DTYPES[precision]
    return {
        "unet": dtype,
        "text_encoder": dtype,
        "vae": torch.float32 if precision == FP16 else dtype,  # the SD2 VAE overflows in fp16
    }


def _cpu_flags() -> frozenset[str]:
    """The CPU's feature names: /proc/cpuinfo on Linux, sysctl on macOS, else torch's probe."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["/usr/sbin/sysctl", "-n", "hw.optional.arm.FEAT_BF16"],  # nosec B603
                                 capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        return frozenset({"FEAT_BF16"}) if out == "1" else frozenset()
    probe = getattr(getattr(torch._C, "_cpu", None), "_is_avx512_bf16_supported", None)
    return frozenset({"avx512_bf16"}) if probe is not None and probe() else frozenset()


def _mps_bf16() -> bool:
    try:
        torch.ones(1, dtype=torch.bfloat16, device="mps")
    except (RuntimeError, TypeError):
        return False
    return True


def device_facts(device: torch.device) -> DeviceFacts:
    """What :func:`auto_precision` needs to know about ``device`` (read from the machine).

    ``TEXT2EARTH_CPU_FLAGS`` (:data:`CPU_FLAGS_ENV`, space-separated) replaces the CPU's own
    flags: a way to see what another machine would get, and to run the fp32 path on a bf16 CPU
    under ``auto``.
    """
    if device.type == "cuda":
        return DeviceFacts("cuda")
    if device.type == "mps":
        return DeviceFacts("mps", mps_bf16=_mps_bf16())
    override = os.environ.get(CPU_FLAGS_ENV)
    flags = frozenset(override.split()) if override is not None else _cpu_flags()
    return DeviceFacts("cpu", cpu_flags=flags)


def check_precision(precision: str | None, device: str | None) -> str:
    """The precision a job on ``device`` (a --device value) would run in; bad ones raise
    InputError before any model is loaded."""
    from engine.model.device import select_device

    return resolve_precision(precision, device_facts(select_device(device)[0]))
