"""Speed benchmarks (issue "Speed"): precisions side by side, scenes per megapixel, big-scene
memory, and the GPU figures. Called from engine.bench.figures (``make bench``, ``--gpu``).

Every ratio compares runs of one process, interleaved so machine noise hits all sides alike.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from engine.bench.baseline import GUIDANCE, LEVEL, SIZE, bare_loop, build_model
from engine.jobs.generate import GenerateRequest, generate
from engine.model.accelerate import accelerate
from engine.model.device import select_device
from engine.model.precision import check_precision
from text2earth_qgis.core.contract.scale import mercator_resolution


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _per_step(stamps: list[float]) -> float:
    """Seconds per denoising step from end-of-step timestamps (the first step excluded: it
    carries the warm-up of the step's kernels)."""
    return (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)


def _job(model, out: Path, steps: int, size: int = SIZE) -> tuple[float, float]:
    """(end-to-end seconds of one engine job to GeoTIFF, seconds per step)."""
    side = size * mercator_resolution(LEVEL)
    stamps: list[float] = []

    def on_step(pipe, i, t, tensors):
        _sync(model.device)
        stamps.append(time.perf_counter())
        return tensors

    request = GenerateRequest(bbox=(920000.0, 6250000.0, 920000.0 + side, 6250000.0 + side),
                              crs="EPSG:3857", prompt="a park", level=LEVEL, out=out, seed=1,
                              steps=steps, guidance=GUIDANCE, overwrite=True)
    _sync(model.device)
    start = time.perf_counter()
    generate(request, model, on_step)
    _sync(model.device)
    return time.perf_counter() - start, _per_step(stamps)


def _bare(model, steps: int) -> tuple[float, float]:
    stamps: list[float] = []
    model.pipeline.use_scheduler("euler")
    _sync(model.device)
    start = time.perf_counter()
    bare_loop(model.pipeline, "a park", steps, 1, stamps)
    _sync(model.device)
    return time.perf_counter() - start, _per_step(stamps)


def precisions(full_size: bool, steps: int, repeats: int, device: str | None, tmp: Path,
               extra: tuple[str, ...] = ()) -> dict:
    """Bare fp32 diffusers loop vs the engine in fp32, bf16 and auto (+ ``extra``)."""
    auto = check_precision("auto", device)
    names = list(dict.fromkeys(["fp32", "bf16", auto, *extra]))
    models = {name: build_model(full_size, device, name) for name in names}
    reference = models["fp32"]
    sides = {"bare fp32": lambda: _bare(reference, steps)}
    for name, model in models.items():
        sides[f"engine {name}"] = lambda model=model, name=name: _job(
            model, tmp / f"{name}.tif", steps)
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
    return {"model": "full-size" if full_size else "tiny", "device": str(reference.device),
            "auto": auto, "size": SIZE, "steps": steps, "repeats": repeats, "rows": rows}


def print_precisions(result: dict) -> None:
    print(f"{result['model']:>9} {result['device']}, {result['size']} px, {result['steps']} "
          f"steps, median of {result['repeats']} (auto = {result['auto']} here):", flush=True)
    for key, row in result["rows"].items():
        print(f"    {key:<14} end to end {row['end_to_end_s']:8.3f} s "
              f"({row['end_to_end_ratio']:.3f} x bare fp32), per step "
              f"{row['per_step_s']:.4f} s ({row['per_step_ratio']:.3f} x)",
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


def gpu(device: str | None, tmp: Path, steps: int = 50, repeats: int = 5) -> dict:
    """The H100 figures in one command (`python -m engine.bench.figures --gpu`): 256 px, 50 steps,
    reference fp16 eager (bare diffusers loop) vs the engine in fp16 eager and compiled, and
    the 1 km^2 level-18 scene."""
    torch_device, _ = select_device(device)
    if torch_device.type != "cuda":
        raise SystemExit("--gpu needs a CUDA device")
    eager = build_model(True, device, "fp16")
    compiled = build_model(True, device, "fp16")
    report = accelerate(compiled.pipeline, torch_device, compile=True)
    compiled.speed = eager.speed = None
    sides = {"reference fp16 eager": lambda: _bare(eager, steps),
             "engine fp16 eager": lambda: _job(eager, tmp / "eager.tif", steps),
             "engine fp16 compiled": lambda: _job(compiled, tmp / "compiled.tif", steps)}
    for run in sides.values():
        run()  # compiles and captures graphs for the compiled side
    times = {k: [] for k in sides}
    for _ in range(repeats):
        for key, run in sides.items():
            times[key].append(run())
    rows = {k: {"end_to_end_s": round(statistics.median(s[0] for s in v), 4),
                "per_step_s": round(statistics.median(s[1] for s in v), 5)}
            for k, v in times.items()}
    ref = rows["reference fp16 eager"]["end_to_end_s"]
    for row in rows.values():
        row["speed_up_vs_reference"] = round(ref / row["end_to_end_s"], 2)
    # 1 km^2 at level 18 (~0.6 m/px: ~1670 x 1670 px), joint denoising, batched windows.
    side_m = 1000.0
    request = GenerateRequest(bbox=(920000.0, 6250000.0, 920000.0 + side_m, 6250000.0 + side_m),
                              crs="EPSG:3857", prompt="farmland", level=18, out=tmp / "km2.tif",
                              seed=1, steps=steps, guidance=GUIDANCE, overwrite=True,
                              scene_method="joint")
    generate(request, compiled)  # warm-up of the scene's batch shapes
    _sync(torch_device)
    start = time.perf_counter()
    generate(request, compiled)
    _sync(torch_device)
    scene_s = time.perf_counter() - start
    result = {"device": torch.cuda.get_device_name(torch_device), "steps": steps,
              "rows": rows, "accelerate": report.as_dict(), "km2_level18_s": round(scene_s, 2)}
    for key, row in rows.items():
        print(f"  {key:<22} {row['end_to_end_s']:.3f} s end to end, {row['per_step_s']:.4f} s "
              f"per step, {row['speed_up_vs_reference']:.2f}x the reference", flush=True)
    print(f"  1 km^2 at level 18, joint, {steps} steps: {scene_s:.2f} s (goal <= 10 s); "
          "256 px 50 steps goal <= 0.3 s and >= 3x the reference", flush=True)
    return result


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
