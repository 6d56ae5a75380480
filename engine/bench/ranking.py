"""`make bench`: what Git-RSCLIP ranking costs.

- Ranking overhead: scoring one 256 px output (processor + one SigLIP forward pass) as a share
  of one 50-step 256 px generation (goal < 2 %). Random weights of the full-size architectures
  (Text2Earth's SD2 UNet; SigLIP ViT-L/16 at 256 px with its 24-layer text tower, the
  architecture of lcybuaa/Git-RSCLIP) or the tiny ones. The generation is timed at two step
  counts and the 50-step time taken from the straight line through them (fixed cost + steps x
  per step), so the bench does not spend minutes per figure on a CPU.
- Candidates: N candidates denoised as one batch vs N one at a time, seconds per image.
- The same share counted in floating-point operations (torch's FlopCounterMode on the meta
  device: no weights, no compute), which no machine load can skew.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.bench.baseline import GUIDANCE, LEVEL, SIZE, build_model, sync
from engine.jobs.candidates import candidate_seeds, render_candidates
from engine.model.checkpoint import Checkpoint
from engine.quality.rank_model import RankModel
from engine.quality.scoring import score_images

PROMPT = "a dense residential area with red roofs and narrow streets"
REFERENCE_STEPS = 50


def siglip_config(full_size: bool):
    from transformers import SiglipConfig

    if not full_size:
        size = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                    num_attention_heads=4)
        return SiglipConfig(text_config=dict(vocab_size=256, max_position_embeddings=64,
                                             bos_token_id=None, **size),
                            vision_config=dict(image_size=SIZE, patch_size=32, **size))
    large = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                 num_attention_heads=16)
    return SiglipConfig(
        text_config=dict(vocab_size=32000, max_position_embeddings=64, bos_token_id=None,
                         **large),
        vision_config=dict(image_size=SIZE, patch_size=16, **large))


def build_ranker(full_size: bool, device: str | None) -> RankModel:
    """A random SigLIP of the chosen size with the tiny checkpoint's processor (the
    tokenizer's vocabulary does not change the cost: the text is padded to 64 tokens)."""
    from transformers import AutoProcessor, SiglipModel

    from engine.model.device import select_device
    from engine.quality.tiny_rank_model import write_tiny_rank_model

    torch_device, _ = select_device(device)
    with tempfile.TemporaryDirectory(prefix="t2e-bench-rank-") as folder:
        processor = AutoProcessor.from_pretrained(  # nosec B615 - a local folder just written
            write_tiny_rank_model(Path(folder)))
    torch.manual_seed(0)
    model = SiglipModel(siglip_config(full_size)).eval().to(torch_device)
    name = "full-size" if full_size else "tiny"
    return RankModel(model, processor, Checkpoint(Path("."), f"random {name} SigLIP", "memory"),
                     torch_device)


@dataclass
class Canvas:
    """The part of an OutputGrid render_candidates reads: one 256 px canvas, no crop."""

    width: int = SIZE
    height: int = SIZE
    canvas_width: int = SIZE
    canvas_height: int = SIZE
    canvas_offset: tuple[int, int] = (0, 0)
    level: int = LEVEL


def _timed(fn, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(full_size: bool, steps: int, repeats: int, candidates: int,
        device: str | None) -> dict:
    model = build_model(full_size, device)
    pipe = model.pipeline
    pipe.use_scheduler("euler")
    ranker = build_ranker(full_size, device)
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8)

    def generation(n_steps: int):
        return lambda: pipe(PROMPT, level=LEVEL, height=SIZE, width=SIZE,
                            num_inference_steps=n_steps, guidance_scale=GUIDANCE,
                            generator=torch.Generator("cpu").manual_seed(1))

    def scoring():
        score_images(ranker, [image], PROMPT)

    scoring()  # warm-up: first-call allocations, lazy imports
    generation(1)()
    score_s = _timed(scoring, model.device, repeats)
    low, high = max(1, steps // 2), steps
    t_low = _timed(generation(low), model.device, max(1, repeats // 2))
    t_high = _timed(generation(high), model.device, max(1, repeats // 2))
    per_step = max(0.0, (t_high - t_low) / (high - low)) if high > low else t_high / high
    fixed = max(0.0, t_high - per_step * high)
    generation_s = fixed + per_step * REFERENCE_STEPS

    seeds = candidate_seeds(1, candidates)

    def batched():
        render_candidates(pipe, PROMPT, None, LEVEL, Canvas(), steps, GUIDANCE, seeds,
                          batch=candidates)

    def one_by_one():
        render_candidates(pipe, PROMPT, None, LEVEL, Canvas(), steps, GUIDANCE, seeds, batch=1)

    reps = max(1, repeats // 2)
    batched_s = _timed(batched, model.device, reps)
    sequential_s = _timed(one_by_one, model.device, reps)
    return {
        "model": "full-size" if full_size else "tiny",
        "device": str(model.device),
        "size": SIZE,
        "score_s": round(score_s, 4),
        "generation_steps_timed": [low, high],
        "generation_50_steps_s": round(generation_s, 3),
        "per_step_s": round(per_step, 4),
        "ranking_overhead_pct": round(score_s / generation_s * 100, 3),
        "candidates": candidates,
        "candidate_steps": steps,
        "batched_s_per_image": round(batched_s / candidates, 4),
        "sequential_s_per_image": round(sequential_s / candidates, 4),
        "batched_vs_sequential": round(batched_s / sequential_s, 3),
    }


def flop_share(full_size: bool = True) -> dict:
    """Operations of one score vs one 50-step 256 px generation (UNet under guidance: batch
    2, text encoder, VAE decode), counted on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextModel, SiglipModel

    from engine.model.tiny_checkpoint import text_encoder_config, unet_config, vae_config

    def count(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    latent = SIZE // 8
    with torch.device("meta"):
        siglip = SiglipModel(siglip_config(full_size))
        unet = UNet2DConditionModel(**unet_config(4, full_size=full_size))
        vae = AutoencoderKL(**vae_config(full_size))
        text = CLIPTextModel(text_encoder_config(full_size))
        width = text.config.hidden_size
        score = count(lambda: siglip(input_ids=torch.zeros(1, 64, dtype=torch.long),
                                     pixel_values=torch.zeros(1, 3, SIZE, SIZE)))
        step = count(lambda: unet(torch.zeros(2, 4, latent, latent), torch.tensor(999),
                                  encoder_hidden_states=torch.zeros(2, 77, width),
                                  class_labels=torch.tensor([0.0, float(LEVEL)])))
        decode = count(lambda: vae.decode(torch.zeros(1, 4, latent, latent)))
        encode = count(lambda: text(torch.zeros(2, 77, dtype=torch.long)))
    generation = REFERENCE_STEPS * step + decode + encode
    return {"model": "full-size" if full_size else "tiny", "score_gflop": round(score / 1e9, 1),
            "unet_step_gflop": round(step / 1e9, 1), "vae_decode_gflop": round(decode / 1e9, 1),
            "generation_50_steps_tflop": round(generation / 1e12, 3),
            "ranking_overhead_pct_flops": round(score / generation * 100, 3)}


def report(result: dict) -> str:
    return (
        f"{result['model']:>9} {result['device']}: Git-RSCLIP score of one {result['size']} px "
        f"image {result['score_s'] * 1000:.1f} ms = {result['ranking_overhead_pct']:.3f} % of a "
        f"{REFERENCE_STEPS}-step generation ({result['generation_50_steps_s']:.2f} s, from "
        f"{result['generation_steps_timed']} steps timed; goal < 2 %); {result['candidates']} "
        f"candidates of {result['candidate_steps']} steps: batched "
        f"{result['batched_s_per_image']:.3f} s/image vs one by one "
        f"{result['sequential_s_per_image']:.3f} s/image ({result['batched_vs_sequential']:.3f})"
    )
