"""Speed benchmarks (issue "Speed"): precisions side by side (eager and compiled, each step
against this CPU's matmul limit), scenes per megapixel, big-scene memory. Called from
engine.bench.figures (``make bench``); the GPU figures are engine.bench.gpu.

Every ratio compares runs of one process, interleaved so machine noise hits all sides alike.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch

from engine.bench.baseline import GUIDANCE, LEVEL, SIZE, bare_loop, build_model, sync
from engine.jobs.generate import GenerateRequest, generate
from engine.model.precision import DTYPES, check_precision
from text2earth_qgis.core.contract.scale import mercator_resolution


def _per_step(stamps: list[float]) -> float:
    """Seconds per denoising step from end-of-step timestamps (the first step excluded: it
    carries the warm-up of the step's kernels)."""
    return (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)


def _job(model, out: Path, steps: int, size: int = SIZE) -> tuple[float, float]:
    """(end-to-end seconds of one engine job to GeoTIFF, seconds per step)."""
    side = size * mercator_resolution(LEVEL)
    stamps: list[float] = []

    def on_step(pipe, i, t, tensors):
        sync(model.device)
        stamps.append(time.perf_counter())
        return tensors

    request = GenerateRequest(bbox=(920000.0, 6250000.0, 920000.0 + side, 6250000.0 + side),
                              crs="EPSG:3857", prompt="a park", level=LEVEL, out=out, seed=1,
                              steps=steps, guidance=GUIDANCE, overwrite=True)
    sync(model.device)
    start = time.perf_counter()
    generate(request, model, on_step)
    sync(model.device)
    return time.perf_counter() - start, _per_step(stamps)


def _bare(model, steps: int) -> tuple[float, float]:
    stamps: list[float] = []
    model.pipeline.use_scheduler("euler")
    sync(model.device)
    start = time.perf_counter()
    bare_loop(model.pipeline, "a park", steps, 1, stamps)
    sync(model.device)
    return time.perf_counter() - start, _per_step(stamps)


def matmul_gflops(dtype: torch.dtype, side: int = 4096, repeats: int = 5) -> float:
    """This machine's measured matrix-multiply rate in ``dtype`` (best of ``repeats``): the
    limit a UNet step, made almost wholly of convolutions and matmuls, can approach."""
    a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * side ** 3 / best / 1e9


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def unet_step_gflop(model, size: int = SIZE) -> float:
    """Multiply-adds x 2 of one UNet call with guidance (batch 2) at ``size`` px, counted by
    torch's FlopCounterMode (convolutions and matmuls; attention's own products, ~4 % at
    256 px, are not counted: the limit is a little optimistic)."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = getattr(model.pipeline.unet, "eager", model.pipeline.unet)
    dtype = unet.dtype
    latents = torch.zeros(2, unet.config.in_channels, size // 8, size // 8, dtype=dtype)
    text = torch.zeros(2, 77, unet.config.cross_attention_dim, dtype=dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(latents, torch.tensor(500), encoder_hidden_states=text,
             class_labels=torch.tensor([0.0, float(LEVEL)]))
    return counter.get_total_flops() / 1e9


def precisions(full_size: bool, steps: int, repeats: int, device: str | None, tmp: Path,
               extra: tuple[str, ...] = (), compiled: tuple[str, ...] = (),
               bf16: bool = True) -> dict:
    """Bare fp32 diffusers loop vs the engine in fp32, bf16 (unless not ``bf16``) and auto
    (+ ``extra``), and the engine compiled (engine.model.accelerate) in each of ``compiled``
    (compiled into an empty inductor cache: the first call is a first start's compile); on a
    CPU each row's step against the limit this machine's matmul rate sets for it."""
    from engine.model.accelerate import accelerate
    from engine.model.compile_cache import INDUCTOR_CACHE_ENV

    auto = check_precision("auto", device)
    names = list(dict.fromkeys(["fp32", *(["bf16"] if bf16 else []), auto, *extra]))
    models = {name: build_model(full_size, device, name) for name in names}
    reference = models["fp32"]
    sides = {"bare fp32": lambda: _bare(reference, steps)}
    for name, model in models.items():
        sides[f"engine {name}"] = lambda model=model, name=name: _job(
            model, tmp / f"{name}.tif", steps)
    compile_s = {}
    for name in compiled:
        model = build_model(full_size, device, name)
        for part in (model.pipeline.unet, model.pipeline.vae, model.pipeline.text_encoder):
            part.eval()  # as loaded (from_pretrained); built ones start in training mode
        with mock.patch.dict(os.environ, {INDUCTOR_CACHE_ENV: str(tmp / f"inductor-{name}")}):
            accelerate(model.pipeline, model.device, compile=True)
            sides[f"engine {name} compiled"] = lambda model=model, name=name: _job(
                model, tmp / f"{name}-compiled.tif", steps)
            compile_s[name] = _timed(sides[f"engine {name} compiled"])  # compiles (minutes)
    for run in sides.values():  # warm-up: first-call allocations, lazy imports
        run()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    for _ in range(repeats):
        for key, run in sides.items():
            times[key].append(run())
    rows = {}
    for key, samples in times.items():
        rows[key] = {"end_to_end_s": round(statistics.median(s[0] for s in samples), 4),
                     "per_step_s": round(statistics.median(s[1] for s in samples), 4)}
    base = rows["bare fp32"]
    for row in rows.values():
        row["end_to_end_ratio"] = round(row["end_to_end_s"] / base["end_to_end_s"], 3)
        row["per_step_ratio"] = round(row["per_step_s"] / base["per_step_s"], 3)
    limits = {}
    gflop = unet_step_gflop(reference)
    # The limit means something where convolutions and matmuls are the time (the full-size
    # model); the tiny one is all overheads.
    if reference.device.type == "cpu" and full_size:
        for key, row in rows.items():
            precision = "fp32" if key.startswith("bare") else key.split()[1]
            dtype = DTYPES[precision]
            if dtype not in limits:
                limits[dtype] = matmul_gflops(dtype)
            row["matmul_gflops"] = round(limits[dtype])
            row["limit_s"] = round(gflop / limits[dtype], 4)
            row["step_over_limit"] = round(row["per_step_s"] / row["limit_s"], 3)
        for name, seconds in compile_s.items():
            rows[f"engine {name} compiled"]["first_call_s"] = round(seconds, 1)
    return {"model": "full-size" if full_size else "tiny", "device": str(reference.device),
            "auto": auto, "size": SIZE, "steps": steps, "repeats": repeats, "rows": rows,
            "step_gflop": round(gflop, 1)}


def print_precisions(result: dict) -> None:
    print(f"{result['model']:>9} {result['device']}, {result['size']} px, {result['steps']} "
          f"steps, median of {result['repeats']} (auto = {result['auto']} here):", flush=True)
    for key, row in result["rows"].items():
        limit = (f"; limit {row['limit_s']:.3f} s ({result['step_gflop']:.0f} GFLOP at "
                 f"{row['matmul_gflops']} GFLOP/s): {row['step_over_limit']:.2f} x the limit"
                 if "limit_s" in row else "")
        first = f"; first call {row['first_call_s']:.0f} s" if "first_call_s" in row else ""
        print(f"    {key:<22} end to end {row['end_to_end_s']:8.3f} s "
              f"({row['end_to_end_ratio']:.3f} x bare fp32), per step "
              f"{row['per_step_s']:.4f} s ({row['per_step_ratio']:.3f} x){limit}{first}",
              flush=True)


def scene_per_megapixel(steps: int, device: str | None, tmp: Path, tile: int = 256,
                        overlap: int = 64, windows: int = 3, full_size: bool = True) -> dict:
    """Seconds per output megapixel: a joint-denoised scene in the auto precision with
    batched windows, against one fp32 tile (the single-image job) on the same weights."""
    auto = check_precision("auto", device)
    fp32 = build_model(full_size, device, "fp32")
    fast = build_model(full_size, device, auto) if auto != "fp32" else fp32
    stride = tile - overlap
    side_px = windows * stride + overlap
    pixel = mercator_resolution(LEVEL)

    def scene() -> float:
        request = GenerateRequest(
            bbox=(920000.0, 6250000.0, 920000.0 + side_px * pixel, 6250000.0 + side_px * pixel),
            crs="EPSG:3857", prompt="farmland", level=LEVEL, out=tmp / "scene.tif", seed=1,
            steps=steps, guidance=GUIDANCE, overwrite=True, tile=tile, overlap=overlap,
            scene_method="joint")
        start = time.perf_counter()
        generate(request, fast)
        return time.perf_counter() - start

    single_s = _job(fp32, tmp / "single.tif", steps, tile)[0]
    scene_s = scene()
    single_mp, scene_mp = tile * tile / 1e6, side_px * side_px / 1e6
    return {"steps": steps, "tile": tile, "overlap": overlap, "windows": windows ** 2,
            "precision": auto, "scene_px": side_px, "scene_s": round(scene_s, 2),
            "single_fp32_s": round(single_s, 2),
            "scene_s_per_mp": round(scene_s / scene_mp, 2),
            "single_s_per_mp": round(single_s / single_mp, 2),
            "ratio": round((scene_s / scene_mp) / (single_s / single_mp), 3)}


BIG_SCENE_PROBE = """
import sys, time
from pathlib import Path
from engine.model.checkpoint import load_model
from engine.jobs.generate import GenerateRequest, generate
from engine.bench.memory import peak_growth, resident_bytes

model = load_model(sys.argv[1], "cpu")
side_px = int(sys.argv[2]); pixel = float(sys.argv[3])
request = GenerateRequest(bbox=(920000.0, 6250000.0, 920000.0 + side_px * pixel,
    6250000.0 + side_px * pixel), crs="EPSG:3857", prompt="farmland", level=17, seed=1,
    steps=1, guidance=4.0, out=Path(sys.argv[4]), overwrite=True, scene_method="joint",
    max_pixels=10**10)
start = time.perf_counter()
peak, growth = peak_growth(lambda: generate(request, model), every_s=0.05)
print(time.perf_counter() - start, peak, growth)
"""


def big_scene_memory(sides: tuple[int, ...], tmp: Path) -> list[dict]:
    """Peak resident memory of joint-denoised scenes (tiny checkpoint with the real latent
    layout, default 512 px windows, 1 step), each in a fresh process."""
    from engine.model.tiny_checkpoint import write_checkpoint

    checkpoint = write_checkpoint(tmp / "tiny-t2i-big")
    rows = []
    for side in sides:
        out = tmp / f"big-{side}.tif"
        proc = subprocess.run(
            [sys.executable, "-c", BIG_SCENE_PROBE, str(checkpoint), str(side),
             str(mercator_resolution(17)), str(out)],
            capture_output=True, text=True, check=True)
        seconds, peak, growth = proc.stdout.strip().splitlines()[-1].split()
        out.unlink(missing_ok=True)
        rows.append({"side_px": side, "megapixels": round(side * side / 1e6, 1),
                     "seconds": round(float(seconds), 1),
                     "peak_rss_gib": round(int(peak) / 2**30, 3),
                     "growth_gib": round(int(growth) / 2**30, 3)})
        print(f"  big scene {side} x {side} px (tiny checkpoint, joint, 1 step): "
              f"{float(seconds):.0f} s, peak RSS {int(peak) / 2**30:.2f} GiB "
              f"(+{int(growth) / 2**30:.2f} GiB above the loaded model)", flush=True)
    return rows


def preview_cost(full: dict, repeats: int = 20) -> dict:
    """A live preview's cost against a denoising step: the per-step latents copy the service
    keeps, and the PNG render of the linear latent-to-RGB projection (on /preview only)."""
    from engine.service.preview import latents_to_png

    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8)
    copies, renders = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        array = latents[0].detach().float().cpu().numpy()
        copies.append(time.perf_counter() - start)
        start = time.perf_counter()
        latents_to_png(array)
        renders.append(time.perf_counter() - start)
    step = full["rows"]["engine fp32"]["per_step_s"]
    copy_s, render_s = statistics.median(copies), statistics.median(renders)
    print(f"  preview: latents copy {copy_s * 1e6:.0f} us, PNG render {render_s * 1e3:.2f} ms: "
          f"{100 * (copy_s + render_s) / step:.3f} % of a {full['model']} fp32 step", flush=True)
    return {"copy_s": copy_s, "render_s": render_s, "step_s": step,
            "percent_of_step": round(100 * (copy_s + render_s) / step, 4)}
