"""Making a loaded model fast on its device, and small enough for it: decided, then applied.

Decisions are pure functions of facts (device type, free memory, sizes) so they are tested
without a GPU; :func:`accelerate` applies them to a pipeline and returns a report that the
service shows in /health and jobs write into their tags.

- Attention: diffusers uses PyTorch's fused ``scaled_dot_product_attention`` (SDPA) by default
  on torch 2; the report says whether every attention layer has it.
- channels-last memory layout for the UNet and VAE on CUDA (cuDNN's fast convolution layout
  for fp16/bf16 tensor cores). Left alone on CPU, where it changes fp32 results.
- ``torch.compile`` of the UNet for fixed shapes (``dynamic=False``: each tile shape compiles
  once; CUDA graphs through ``mode="reduce-overhead"`` remove the per-kernel launch cost that
  dominates a 256 px tile). On by default on CUDA only. On a CPU (``--compile``) inductor
  freezes the weights so oneDNN prepacks the convolutions' and linears' weights once instead
  of reordering them at every call: that is the whole gain there (bf16 step 1.27 s -> 1.0-1.08
  s, fp32 2.49 -> 2.12 s on 2 avx512_bf16 cores; without freezing no gain), compiled once for the
  first call's inputs (engine.model.compiled_unet: other inputs run eagerly); compiling takes
  minutes, so it stays opt-in: the first image comes sooner without it. Inductor's caches
  live in the user's cache folder (engine.model.compile_cache): its kernels outlive a reboot.
- Memory savers (attention slicing, VAE tiling, sequential CPU offload) only when the card's
  free memory cannot hold the weights plus one window's activations, cheapest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.model.device import UNET_ACTIVATION_BYTES_PER_LATENT_PX, free_memory

ATTENTION_SLICING, VAE_TILING, SEQUENTIAL_OFFLOAD = (
    "attention_slicing", "vae_tiling", "sequential_offload")
# Peak of an fp32 VAE decode per output pixel (the last up-blocks at full resolution).
VAE_DECODE_BYTES_PER_PX = 2_000
VAE_TILE = 512  # diffusers' default tile for VAE tiling (sample size of the SD2 VAE)
MEMORY_SAFETY = 0.9  # of the free memory: the allocator fragments
COMPILE_MODE_CUDA = "reduce-overhead"
CPU_COMPILE_CONFIG = {"freezing": True}  # inductor's, see the module's docstring
WARM_TILES = (256, 512)  # the default window (the training size) and the common larger option
# Memory savers are chosen for the larger option, so a job with either window fits.
PLAN_TILE = 512


@dataclass
class SpeedReport:
    compiled: bool = False
    channels_last: bool = False
    sdpa: bool = False
    memory_savers: list[str] = field(default_factory=list)
    why: str = ""
    # Compiled only: whether this machine's on-disk compile cache already holds this model's
    # graphs (warm-up then takes seconds, not minutes). None when not compiled.
    compile_cached: bool | None = None

    def as_dict(self) -> dict:
        return {"compiled": self.compiled, "channels_last": self.channels_last,
                "sdpa": self.sdpa, "memory_savers": list(self.memory_savers), "why": self.why,
                "compile_cached": self.compile_cached}


def should_compile(requested: bool | None, device_type: str) -> bool:
    """``--compile`` / ``--no-compile`` win; unset means on CUDA only."""
    return device_type == "cuda" if requested is None else bool(requested)


def choose_memory_savers(free_bytes: int | None, weights_bytes: int, tile: int,
                         dtype_bytes: int) -> tuple[list[str], str]:
    """(savers to turn on, why) for running one ``tile`` px window with guidance (2 rows)."""
    if free_bytes is None:
        return [], "free memory unknown: none"
    unet = UNET_ACTIVATION_BYTES_PER_LATENT_PX * (tile // 8) ** 2 * 2 * dtype_bytes / 4
    vae = VAE_DECODE_BYTES_PER_PX * tile * tile
    budget = free_bytes * MEMORY_SAFETY
    gib = 2 ** 30
    facts = (f"{free_bytes / gib:.1f} GiB free; weights {weights_bytes / gib:.1f} GiB, "
             f"a {tile} px window {(unet + vae) / gib:.1f} GiB")
    if weights_bytes + unet + vae <= budget:
        return [], f"{facts}: none needed"
    # Sliced attention about halves the UNet's peak; tiled decoding caps the VAE's at a tile.
    sliced = unet / 2 + VAE_DECODE_BYTES_PER_PX * min(tile, VAE_TILE) ** 2
    if weights_bytes + sliced <= budget:
        return [ATTENTION_SLICING, VAE_TILING], f"{facts}: slicing and tiling fit"
    return ([ATTENTION_SLICING, VAE_TILING, SEQUENTIAL_OFFLOAD],
            f"{facts}: weights stay in CPU memory, each layer visits the GPU")


def weights_bytes(pipe) -> int:
    return sum(p.numel() * p.element_size()
               for part in (pipe.unet, pipe.vae, pipe.text_encoder) for p in part.parameters())


def apply_memory_savers(pipe, savers: list[str]) -> None:
    if ATTENTION_SLICING in savers:
        pipe.enable_attention_slicing()
    if VAE_TILING in savers:
        pipe.vae.enable_tiling()
    if SEQUENTIAL_OFFLOAD in savers:
        pipe.enable_sequential_cpu_offload()


def uses_sdpa(pipe) -> bool:
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = list(pipe.unet.attn_processors.values())
    return bool(processors) and all(isinstance(p, AttnProcessor2_0) for p in processors)


def compile_unet(pipe, backend: str = "inductor", mode: str | None = None,
                 config: dict | None = None, on_compiled=None) -> None:
    """Replace the pipeline's UNet by its compiled form (same weights, same module API); on a
    CPU compiled once, with inductor ``config``, for its first call's inputs
    (engine.model.compiled_unet), ``on_compiled`` called once that compile is done."""
    compiled = torch.compile(pipe.unet, backend=backend, mode=mode, fullgraph=True,
                             dynamic=False)
    if pipe.unet.device.type == "cpu":
        from engine.model.compiled_unet import CompiledOnce

        compiled = CompiledOnce(pipe.unet, compiled, config, on_compiled)
    pipe.unet = compiled


def accelerate(pipe, device: torch.device, compile: bool | None = None,
               tile: int = PLAN_TILE, compile_backend: str = "inductor",
               compile_key: str | None = None) -> SpeedReport:
    """Apply the device's speed settings to a freshly loaded pipeline; what was done.
    ``compile_key`` (engine.model.compile_cache.compile_key) names the compiled model on this
    machine: whether its compile is cached is reported, and recorded once done."""
    report = SpeedReport()
    if device.type == "cuda":
        dtype_bytes = torch.finfo(pipe.unet.dtype).bits // 8
        report.memory_savers, report.why = choose_memory_savers(
            free_memory(device), weights_bytes(pipe), tile, dtype_bytes)
        apply_memory_savers(pipe, report.memory_savers)
        if SEQUENTIAL_OFFLOAD not in report.memory_savers:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
            report.channels_last = True
    report.sdpa = uses_sdpa(pipe)
    if should_compile(compile, device.type) and SEQUENTIAL_OFFLOAD not in report.memory_savers:
        from engine.model import compile_cache

        compile_cache.use_persistent_cache()
        inductor = compile_backend == "inductor"
        mode = COMPILE_MODE_CUDA if device.type == "cuda" and inductor else None
        config = CPU_COMPILE_CONFIG if device.type == "cpu" and inductor else None
        def compiled() -> None:
            if compile_key:
                compile_cache.mark_compiled(compile_key)

        compile_unet(pipe, compile_backend, mode, config, on_compiled=compiled)
        report.compiled = True
        report.compile_cached = bool(compile_key) and compile_cache.is_compiled(compile_key)
    return report


def warm_up(pipe, tiles: tuple[int, ...] | None = None, steps: int = 2) -> None:
    """Run each tile shape once so the first real job does not pay for compilation (on a CPU
    the default window only: the one shape compiled there)."""
    if tiles is None:
        tiles = WARM_TILES if pipe.unet.device.type != "cpu" else WARM_TILES[:1]
    inpainting = pipe.unet.config.in_channels == 9
    for tile in tiles:
        if inpainting:
            image = torch.zeros((tile, tile, 3), dtype=torch.uint8).numpy()
            mask = torch.ones((tile, tile)).numpy()
            pipe("warm-up", image, mask, level=17, num_inference_steps=steps)
        else:
            pipe("warm-up", level=17, height=tile, width=tile, num_inference_steps=steps)
