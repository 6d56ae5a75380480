"""Batch figures (issue "Beyond one machine"): the per-item overhead of local Ray against
in-process (goal <= 5 %), items/s with 1 and 2 workers on the tiny model, and the scaling
model's table for a 1.6 Gpx city at level 18 (engine.batch.scaling, docs/scaling.md).

Every worker runs one CPU thread (Ray gives each actor one CPU), so the sides compare the
same arithmetic; the model load and Ray's start are left out of the per-item times (they are
paid once per batch) and reported on their own.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.batch.items import BatchItem
from engine.batch.scaling import (
    CITY_PIXELS,
    H100_WINDOW_S_ASSUMED,
    city_side,
    format_table,
    scaling_table,
    wavefront_sizes,
)
from engine.batch.tasks import Settings, tasks_for
from engine.batch.workers import InProcess, ModelSpec, RayWorkers

STEPS_PER_WINDOW = 50  # the scaling model's window: 512 px, 50 steps


def _items(n: int) -> list[BatchItem]:
    return [BatchItem(f"b{i}", (447000.0 + 100 * i, 5411000.0, 447000.0 + 100 * i + 150,
                                5411150.0), "EPSG:32632", "farmland", level=17, seed=i)
            for i in range(n)]


def _timed(workers, tasks) -> float:
    start = time.perf_counter()
    results = list(workers.run(tasks))
    seconds = time.perf_counter() - start
    failed = [r.error for r in results if r.status != "done"]
    if failed:
        raise RuntimeError(f"bench items failed: {failed[0]}")
    return seconds


def item_figures(tmp: Path, items: int = 6, steps: int = 4, repeats: int = 3) -> dict:
    import ray

    from engine.model.tiny_checkpoint import write_checkpoint

    checkpoint = write_checkpoint(tmp / "tiny", seed=0)
    spec = ModelSpec(str(checkpoint), "fp32", "cpu", threads=1)
    settings = Settings(model=str(checkpoint), steps=steps, tile=256, overlap=64)
    tasks = tasks_for(_items(items), tmp / "out", settings)
    (tmp / "out").mkdir()
    local = InProcess(spec)
    _timed(local, tasks[:1])  # the model load and first-call warm-up
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        one = RayWorkers(spec, 1)
        start_1 = time.perf_counter() - start
        _timed(one, tasks[:1])
        in_process, on_ray = [], []
        for _ in range(repeats):  # interleaved: machine noise hits both sides alike
            in_process.append(_timed(local, tasks))
            on_ray.append(_timed(one, tasks))
        one.close()
        start = time.perf_counter()
        two = RayWorkers(spec, 2)
        start_2 = time.perf_counter() - start
        _timed(two, tasks[:2])
        two_workers = [_timed(two, tasks) for _ in range(repeats)]
        two.close()
    finally:
        ray.shutdown()
    per_in = statistics.median(in_process) / items
    per_ray = statistics.median(on_ray) / items
    return {"items": items, "steps": steps, "repeats": repeats,
            "in_process_item_s": round(per_in, 4), "ray_item_s": round(per_ray, 4),
            "ray_overhead_pct": round(100 * (per_ray / per_in - 1), 2),
            "items_per_s_1_worker": round(1 / per_in, 3),
            "items_per_s_1_ray_worker": round(1 / per_ray, 3),
            "items_per_s_2_ray_workers": round(items / statistics.median(two_workers), 3),
            "ray_start_1_worker_s": round(start_1, 2), "ray_start_2_workers_s": round(start_2, 2)}


def window_figures(tmp: Path, steps: int = 4) -> dict:
    """Seconds per 512 px outpainting window on this CPU (tiny model, one thread, scaled to
    50 steps), and the driver's share per window: read the context, blend, write, read back."""
    import torch

    from engine.geo.geotiff import scratch_profile
    from engine.geo.tiling import outpaint_blend, outpaint_mask, plan_scene
    from engine.model.checkpoint import load_model
    from engine.model.tiny_checkpoint import write_checkpoint
    from engine.scenes.folder import OutputFolder
    from engine.scenes.job import as_bands, as_image, tile_window
    from engine.scenes.store import WindowStore

    checkpoint = write_checkpoint(tmp / "tiny-inpaint", inpainting=True, seed=1)
    model = load_model(str(checkpoint), "cpu", precision="fp32")
    plan = plan_scene(960, 512, 512, 64)
    window = plan.windows()[1]
    existing = np.zeros((512, 512, 3), np.uint8)
    mask = outpaint_mask(plan, window)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            image = model.pipeline.inpaint_batch(
                ["farmland"], [existing], [mask], 17, None, steps, 4.0,
                [torch.Generator("cpu").manual_seed(1)]).images[0]
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    from affine import Affine
    from pyproj import CRS

    scratch = tmp / "scratch.tif"
    store = WindowStore.fresh(OutputFolder(tmp), scratch, scratch_profile(
        plan.canvas_width, plan.canvas_height, CRS.from_epsg(32632),
        Affine(1, 0, 447000, 0, -1, 5411000)))
    io = []
    for _ in range(5):
        start = time.perf_counter()
        before = as_image(store.read(window=tile_window(window)))
        weight = outpaint_blend(plan, window)[..., None]
        blended = np.rint(weight * image + (1.0 - weight) * before).astype(np.uint8)
        store.commit([(window.key, tile_window(window), as_bands(blended))])
        io.append(time.perf_counter() - start)
    window_s = statistics.median(times) * STEPS_PER_WINDOW / steps
    return {"tiny_window_s_50_steps": round(window_s, 3),
            "driver_io_window_s": round(statistics.median(io), 4)}


def run_batch_bench(steps: int = 4, repeats: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="t2e-bench-batch-") as folder:
        items = item_figures(Path(folder), steps=steps, repeats=repeats)
        windows = window_figures(Path(folder), steps=steps)
    side = city_side()
    sizes = wavefront_sizes(side, side)
    io_s = windows["driver_io_window_s"]
    tables = {
        "cpu_tiny_measured": scaling_table(sizes, windows["tiny_window_s_50_steps"], io_s),
        "h100_assumed": scaling_table(sizes, H100_WINDOW_S_ASSUMED, io_s),
    }
    return {"items": items, "windows": windows,
            "city": {"pixels": CITY_PIXELS, "side_px": side, "windows": sum(sizes),
                     "wavefronts": len(sizes), "widest_wavefront": max(sizes)},
            "scaling": {k: [{"gpus": r.gpus, "seconds": round(r.seconds, 1),
                             "speedup": round(r.speedup, 2)} for r in rows]
                        for k, rows in tables.items()},
            "_tables": tables}


def print_batch_bench(result: dict) -> None:
    i, w, c = result["items"], result["windows"], result["city"]
    print(f"  batch: {i['items']} tiny items x {i['repeats']}, {i['steps']} steps, one thread "
          f"per worker: in-process {i['in_process_item_s']:.3f} s/item, local Ray "
          f"{i['ray_item_s']:.3f} s/item: overhead {i['ray_overhead_pct']:+.2f} % (goal <= "
          f"5 %); items/s: 1 worker {i['items_per_s_1_worker']:.2f} (Ray: "
          f"{i['items_per_s_1_ray_worker']:.2f}), 2 Ray workers "
          f"{i['items_per_s_2_ray_workers']:.2f}; Ray start + model load: 1 worker "
          f"{i['ray_start_1_worker_s']:.1f} s, 2 workers {i['ray_start_2_workers_s']:.1f} s",
          flush=True)
    print(f"  scaling model: a {c['pixels'] / 1e9:.1f} Gpx city at level 18 = {c['side_px']} px "
          f"square = {c['windows']} windows of 512 px (overlap 64) in {c['wavefronts']} "
          f"wavefronts of at most {c['widest_wavefront']}; driver I/O "
          f"{w['driver_io_window_s'] * 1000:.1f} ms/window (measured)", flush=True)
    tables = result["_tables"]
    print(format_table(tables["cpu_tiny_measured"],
                       f"  MEASURED here: tiny model on this CPU, "
                       f"{w['tiny_window_s_50_steps']:.2f} s/window at 50 steps (a CPU "
                       "worker per 'GPU'):"), flush=True)
    print(format_table(tables["h100_assumed"],
                       f"  ASSUMED (not measured): one H100 = {H100_WINDOW_S_ASSUMED} s per "
                       "512 px window, 50 steps, fp16, full-size model:"), flush=True)
