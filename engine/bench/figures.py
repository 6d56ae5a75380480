"""`make bench`: the engine's per-image overhead against a bare diffusers loop.

Both sides run on the very same modules (random weights of the tiny and the full-size
Text2Earth architecture), seed, size, scheduler, level and guidance, interleaved so that
machine noise hits both alike. The engine side is the whole job: output grid, pipeline, crop
and the GeoTIFF written to disk; the pipeline alone (image in memory) is timed too. The bare
side is the least a script can do: encode, draw, denoise with class_labels, decode to uint8.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from engine.bench.baseline import GUIDANCE, LEVEL, SIZE, bare_loop, build_model, sync
from engine.jobs.generate import GenerateRequest, generate
from text2earth_qgis.core.contract.scale import mercator_resolution


def run(full_size: bool, steps: int, repeats: int, device: str | None, out_dir: Path) -> dict:
    model = build_model(full_size, device)
    pipe = model.pipeline
    side = SIZE * mercator_resolution(LEVEL)
    x0, y0 = 920000.0, 6250000.0

    def engine_job(i: int) -> None:
        request = GenerateRequest(
            bbox=(x0, y0, x0 + side, y0 + side), crs="EPSG:3857", prompt="a park", level=LEVEL,
            out=out_dir / f"bench-{i}.tif", seed=1, steps=steps, guidance=GUIDANCE,
            overwrite=True,
        )
        generate(request, model)

    def pipeline_job(i: int) -> None:
        pipe.use_scheduler("euler")
        pipe("a park", level=LEVEL, height=SIZE, width=SIZE, num_inference_steps=steps,
             guidance_scale=GUIDANCE, generator=torch.Generator("cpu").manual_seed(1))

    def bare_job(i: int) -> None:
        pipe.use_scheduler("euler")
        bare_loop(pipe, "a park", steps, 1)

    engine_job(-1)  # warm-up: first-call allocations and lazy imports on both sides
    bare_job(-1)
    engine_times, pipeline_times, bare_times = [], [], []
    jobs = ((engine_job, engine_times), (pipeline_job, pipeline_times), (bare_job, bare_times))
    for i in range(repeats):
        for job, times in jobs:
            sync(model.device)
            start = time.perf_counter()
            job(i)
            sync(model.device)
            times.append(time.perf_counter() - start)
    engine_s, bare_s = statistics.median(engine_times), statistics.median(bare_times)
    pipeline_s = statistics.median(pipeline_times)
    return {
        "model": "full-size" if full_size else "tiny",
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "size": SIZE,
        "steps": steps,
        "repeats": repeats,
        "engine_s": round(engine_s, 4),
        "pipeline_s": round(pipeline_s, 4),
        "bare_s": round(bare_s, 4),
        "pipeline_ratio": round(pipeline_s / bare_s, 4),
        "ratio": round(engine_s / bare_s, 4),
        "overhead_ms": round((engine_s - bare_s) * 1000, 1),
    }


def run_service(steps: int, repeats: int, burst: int, device: str | None, tmp: Path) -> dict:
    """Per-job overhead of going through the local service, and queued-job throughput."""
    import sys

    from engine.model.checkpoint import load_model
    from engine.model.tiny_checkpoint import write_checkpoint
    from text2earth_qgis.core.service.client import start_local_service

    checkpoint = write_checkpoint(tmp / "tiny-checkpoint")
    out_dir = tmp / "service-out"
    model = load_model(str(checkpoint), device)
    service = start_local_service(sys.executable, [str(out_dir)], str(checkpoint), device)
    side = SIZE * mercator_resolution(LEVEL)
    job = dict(bbox=[920000.0, 6250000.0, 920000.0 + side, 6250000.0 + side], crs="EPSG:3857",
               prompt="a park", level=LEVEL, seed=1, steps=steps, overwrite=True)

    def in_process(i: int) -> None:
        generate(GenerateRequest(**{**job, "bbox": tuple(job["bbox"]),
                                    "out": out_dir / f"local-{i}.tif"}), model)

    def through_service(i: int) -> None:
        submitted = service.client.submit({**job, "out": f"svc-{i}.tif"})
        service.client.wait(submitted["id"])

    try:
        in_process(-1)
        through_service(-1)
        local_times, service_times = [], []
        for i in range(repeats):
            for fn, times in ((in_process, local_times), (through_service, service_times)):
                start = time.perf_counter()
                fn(i)
                times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(burst):
            in_process(1000 + i)
        local_burst = time.perf_counter() - start
        start = time.perf_counter()
        ids = [service.client.submit({**job, "out": f"burst-{i}.tif"})["id"]
               for i in range(burst)]
        for job_id in ids:
            service.client.wait(job_id)
        service_burst = time.perf_counter() - start
    finally:
        service.stop()
    local_s, service_s = statistics.median(local_times), statistics.median(service_times)
    return {
        "in_process_s": round(local_s, 4),
        "service_s": round(service_s, 4),
        "overhead_ms": round((service_s - local_s) * 1000, 1),
        "overhead_pct": round((service_s / local_s - 1) * 100, 2),
        "burst_jobs": burst,
        "service_jobs_per_s": round(burst / service_burst, 2),
        "in_process_jobs_per_s": round(burst / local_burst, 2),
    }


SCENE_PROBE = """
import sys, time
from pathlib import Path
from engine.model.checkpoint import load_model
from engine.jobs.generate import GenerateRequest, generate
from engine.bench.memory import peak_growth

model = load_model(sys.argv[1], sys.argv[2])
side, tile, overlap = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
steps = int(sys.argv[6])
request = GenerateRequest(bbox=(920000.0, 6250000.0, 920000.0 + side, 6250000.0 + side),
    crs="EPSG:3857", prompt="farmland", level=17, seed=1, steps=steps, tile=tile,
    overlap=overlap, out=Path(sys.argv[7]), overwrite=True, scene_method="outpaint")
start = time.perf_counter()
peak, growth = peak_growth(lambda: generate(request, model))
print(time.perf_counter() - start, peak // 1024, growth // 1024)
"""


def run_scenes(steps: int, device: str | None, tmp: Path) -> list[dict]:
    """Time and peak memory of outpainted scenes of 1, 4, 16 and 64 windows (tiny model,
    each in a fresh process so ru_maxrss is that scene's peak)."""
    import subprocess
    import sys

    from engine.model.tiny_checkpoint import write_checkpoint

    checkpoint = write_checkpoint(tmp / "tiny-inpainting", inpainting=True, seed=1)
    tile, overlap = 256, 64
    pixel = mercator_resolution(LEVEL)
    rows = []
    for n in (1, 2, 4, 8):
        for ovl in (overlap, 0):
            side_px = n * (tile - ovl) + ovl
            out = subprocess.run(
                [sys.executable, "-c", SCENE_PROBE, str(checkpoint), device or "auto",
                 str(side_px * pixel), str(tile), str(ovl), str(steps),
                 str(tmp / f"scene-{n}-{ovl}.tif")],
                capture_output=True, text=True, check=True,
            )
            seconds, peak_kb, growth_kb = out.stdout.strip().splitlines()[-1].split()
            rows.append({"windows": n * n, "overlap": ovl, "side_px": side_px,
                         "seconds": round(float(seconds), 3),
                         "per_window_s": round(float(seconds) / (n * n), 4),
                         "peak_rss_mb": round(int(peak_kb) / 1024, 1),
                         "peak_above_loaded_mb": round(int(growth_kb) / 1024, 1)})
    return rows


def speed_figures(args, tmp: Path) -> dict:
    """Precisions side by side, scenes per megapixel, big-scene memory (or the GPU set)."""
    from engine.bench import speed as bench_speed

    if args.gpu:
        from engine.bench import gpu as bench_gpu

        result = bench_gpu.run(bench_gpu.Options(device=args.device))
        bench_gpu.report(result)
        return {"gpu": result}
    from engine.model.precision import CPU_FLAGS_ENV, check_precision

    out: dict = {"precisions": []}
    auto = check_precision("auto", args.device)
    if not args.skip_first_image and not args.skip_full_size:
        # First, while this process is small: a start is timed against the whole machine.
        from engine.bench import first_image

        # Absolute but not resolved: a venv's python is a link out of the venv.
        cpu_torch = [os.path.abspath(args.cpu_torch_python)] if args.cpu_torch_python else []
        pythons = (sys.executable, *cpu_torch)
        out["first_image"] = first_image.main(tmp / "hub-like", (auto,), pythons)
    for full_size in (False, True) if not args.skip_full_size else (False,):
        compiled = (auto,) if full_size and not args.skip_compile else ()
        result = bench_speed.precisions(full_size, args.steps,
                                        max(2, args.repeats // (2 if full_size else 1)),
                                        args.device, tmp, compiled=compiled)
        bench_speed.print_precisions(result)
        out["precisions"].append(result)
    if not args.skip_full_size and auto == "bf16":
        # CPUs without native bf16 are users too: the same table as such a CPU runs it (auto
        # resolves from the CPU flags, here faked empty), so a bf16 gain is not an fp32 loss.
        # Its fp32 rows run this CPU's own fp32 kernels (AVX-512 here): the ratios carry over.
        print(f"  as a CPU without native bf16 runs it ({CPU_FLAGS_ENV}=''):", flush=True)
        with mock.patch.dict(os.environ, {CPU_FLAGS_ENV: ""}):
            result = bench_speed.precisions(
                True, args.steps, max(2, args.repeats // 2), args.device, tmp,
                compiled=() if args.skip_compile else ("fp32",), bf16=False)
        bench_speed.print_precisions(result)
        out["fp32_cpu"] = result
    out["preview"] = bench_speed.preview_cost(out["precisions"][-1])
    if not args.skip_full_size:
        scene = bench_speed.scene_per_megapixel(args.steps, args.device, tmp)
        out["scene_per_mp"] = scene
        print(f"  scene {scene['scene_px']} px ({scene['windows']} windows of {scene['tile']} px,"
              f" overlap {scene['overlap']}, {scene['precision']}, batched): "
              f"{scene['scene_s_per_mp']:.1f} s/MP vs one fp32 tile {scene['single_s_per_mp']:.1f}"
              f" s/MP: ratio {scene['ratio']:.3f} (goal <= 0.75), {scene['steps']} steps",
              flush=True)
    sides = tuple(int(s) for s in args.big_sides.split(",") if s)
    out["big_scenes"] = bench_speed.big_scene_memory(sides, tmp) if sides else []
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench", description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-full-size", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--skip-scenes", action="store_true")
    parser.add_argument("--skip-batch", action="store_true",
                        help="skip the batch figures (local Ray vs in-process, scaling model)")
    parser.add_argument("--skip-speed", action="store_true",
                        help="skip the precision, scene-per-megapixel and big-scene figures")
    parser.add_argument("--big-sides", default="1024,2048,4096",
                        help="sides in px of the big-scene memory runs (20000 is the goal)")
    parser.add_argument("--skip-cascade", action="store_true",
                        help="skip cascade vs outpaint vs joint (engine.bench.cascade)")
    parser.add_argument("--gpu", action="store_true",
                        help="only the GPU figures (engine.bench.gpu: fp16 eager reference vs "
                             "compiled engine; `make bench-gpu` on a lent GPU machine)")
    parser.add_argument("--skip-compile", action="store_true",
                        help="no compiled rows (a first CPU compile of the UNet takes minutes)")
    parser.add_argument("--skip-first-image", action="store_true",
                        help="skip the time to the first image from a cold `serve` "
                             "(engine.bench.first_image: writes 3.4 GB of weights)")
    parser.add_argument("--cpu-torch-python",
                        help="an engine Python with the CPU build of torch (what the set-up "
                             "installs without an NVIDIA GPU; make bench: build/bench-cpu-torch):"
                             " first-image rows from it too")
    parser.add_argument("--skip-ranking", action="store_true",
                        help="skip the Git-RSCLIP ranking figures (engine.bench.ranking)")
    parser.add_argument("--candidates", type=int, default=4,
                        help="candidates in the batched-vs-sequential figure")
    parser.add_argument("--json", default="output/bench.json")
    args = parser.parse_args(argv)
    if args.cpu_torch_python and not os.access(args.cpu_torch_python, os.X_OK):
        parser.error(f"--cpu-torch-python {args.cpu_torch_python}: no such Python")

    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    results = []
    with tempfile.TemporaryDirectory(prefix="t2e-bench-") as tmp:
        if args.gpu or not args.skip_speed:
            results.append(speed_figures(args, Path(tmp)))
        configs = [] if args.gpu else [(False, args.repeats)]
        if not args.skip_full_size and not args.gpu:
            configs.append((True, max(2, args.repeats // 2)))
        for full_size, repeats in configs:
            result = run(full_size, args.steps, repeats, args.device, Path(tmp))
            results.append(result)
            print(
                f"{result['model']:>9} {result['device']} {result['dtype']}: engine job "
                f"{result['engine_s']:.3f} s (to GeoTIFF), pipeline {result['pipeline_s']:.3f} s, "
                f"bare diffusers {result['bare_s']:.3f} s; engine/bare {result['ratio']:.3f} "
                f"(overhead {result['overhead_ms']:+.1f} ms), pipeline/bare "
                f"{result['pipeline_ratio']:.3f}; {SIZE}x{SIZE}, {args.steps} steps, median of "
                f"{result['repeats']}",
                flush=True,
            )
        if not args.skip_service and not args.gpu:
            svc = run_service(args.steps, args.repeats, 20, args.device, Path(tmp))
            results.append({"service": svc})
            print(
                f"  service: in-process job {svc['in_process_s']:.3f} s, through the service "
                f"{svc['service_s']:.3f} s: overhead {svc['overhead_ms']:+.1f} ms "
                f"({svc['overhead_pct']:+.2f} %; goal < 50 ms or 2 %); {svc['burst_jobs']} "
                f"queued tiny jobs: {svc['service_jobs_per_s']:.2f} jobs/s via the service, "
                f"{svc['in_process_jobs_per_s']:.2f} jobs/s in-process",
                flush=True,
            )
        if not args.skip_scenes and not args.gpu:
            rows = run_scenes(2, args.device, Path(tmp))
            results.append({"scenes": rows})
            by = {(r["windows"], r["overlap"]): r for r in rows}
            for r in rows:
                print(f"  scene {r['windows']:>2} windows, overlap {r['overlap']:>2}: "
                      f"{r['side_px']} px square, {r['seconds']:.2f} s "
                      f"({r['per_window_s']:.3f} s/window), peak RSS {r['peak_rss_mb']:.0f} MB "
                      f"({r['peak_above_loaded_mb']:+.0f} MB above the loaded model)")
            flat = by[(64, 64)]["per_window_s"] / by[(4, 64)]["per_window_s"]
            same_n = by[(64, 64)]["seconds"] / by[(64, 0)]["seconds"]
            memory = by[(64, 64)]["peak_rss_mb"] / by[(4, 64)]["peak_rss_mb"]
            print(f"  scenes: time per window 64 vs 4 windows {flat:.3f} (goal within 10 %); "
                  f"overlap vs the same number of non-overlapping windows {same_n:.3f} "
                  f"(goal <= 1.35); peak memory 64 / 4 windows {memory:.3f} (goal <= 1.1)",
                  flush=True)
        if not args.skip_cascade and not args.gpu:
            from engine.bench import cascade as bench_cascade

            methods = bench_cascade.compare(8, 3, args.device, Path(tmp) / "cascade")
            methods["planned"] = bench_cascade.coarse_shares()
            bench_cascade.print_compare(methods)
            bench_cascade.print_shares(methods["planned"])
            results.append({"scene_methods": methods})
        if not args.skip_batch and not args.gpu:
            from engine.bench.batch import print_batch_bench, run_batch_bench

            batch = run_batch_bench(args.steps, max(2, args.repeats // 2))
            print_batch_bench(batch)
            results.append({"batch": {k: v for k, v in batch.items() if k != "_tables"}})
        if not args.skip_ranking:
            from engine.bench import ranking

            for full_size in (False, True) if not args.skip_full_size else (False,):
                rank = ranking.run(full_size, args.steps, args.repeats, args.candidates,
                                   args.device)
                results.append({"ranking": rank})
                print(ranking.report(rank), flush=True)
            flops = ranking.flop_share(not args.skip_full_size)
            results.append({"ranking_flops": flops})
            print(f"  ranking in operations ({flops['model']}): one score "
                  f"{flops['score_gflop']:.0f} GFLOP = {flops['ranking_overhead_pct_flops']:.2f} % "
                  f"of a {ranking.REFERENCE_STEPS}-step 256 px generation "
                  f"({flops['generation_50_steps_tflop']:.1f} TFLOP; goal < 2 %)", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"goal: engine / bare <= 1.03; figures in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
