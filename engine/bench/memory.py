"""Peak resident memory while some work runs (benchmarks and the memory tests), and the
huge-raster figures of `make bench` (`python -m engine.bench memory`): peak RSS of an edit
and a restyle of a 20000 px square raster through the CLI, and the service's RSS idle, during
and after a cancelled whole-raster restyle (goals: at most 2 GiB above the loaded model;
after the cancel within 10 % of idle).

Sampled from /proc (statm, VmHWM): ru_maxrss would carry the parent's peak across
fork + exec, which hides what a child process itself needed.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable


def resident_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_growth(work: Callable[[], object], every_s: float = 0.005) -> tuple[int, int]:
    """Run ``work``; (peak resident bytes during it, growth above the level before it)."""
    before = peak = resident_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident_bytes())
            done.wait(every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return peak, peak - before


# -- huge rasters: memory bounded by windows, not by the raster ---------------------------------

HUGE_SIDE = 20000  # px: the raster
PATCH = 512  # px of real (random) pixels in the middle; the rest constant or nodata
MASK_HALF = 100  # px: the small mask is a square twice this wide around the middle
LEVEL17_M = 1.194328566955879  # m: level 17's pixel at the origin used, so model scale is 1


def huge_raster(path, side: int, fill: int) -> str:
    """A ``side`` px square RGB GeoTIFF, tiled and deflated: ``fill`` everywhere (0: nodata,
    blocks left unwritten), random pixels in a small patch in the middle."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8",
                   crs="EPSG:3857", transform=from_origin(920000.0, 6250000.0, LEVEL17_M,
                                                          LEVEL17_M),
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate", nodata=0,
                   SPARSE_OK=fill == 0, BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        if fill:
            rows = np.full((3, 1024, side), fill, np.uint8)
            for r in range(0, side, 1024):
                n = min(1024, side - r)
                dst.write(rows[:, :n], window=Window(0, r, side, n))
        c = side // 2 - PATCH // 2
        patch = np.random.default_rng(0).integers(1, 255, (3, PATCH, PATCH), dtype=np.uint8)
        dst.write(patch, window=Window(c, c, PATCH, PATCH))
    return str(path)


def small_mask(side: int) -> str:
    """WKT of a square of 2 * MASK_HALF px in the middle of huge_raster's grid."""
    centre = side / 2 * LEVEL17_M
    x, y, d = 920000.0 + centre, 6250000.0 - centre, MASK_HALF * LEVEL17_M
    return (f"POLYGON (({x - d} {y - d}, {x + d} {y - d}, {x + d} {y + d}, {x - d} {y + d}, "
            f"{x - d} {y - d}))")


PEAK_AT_EXIT = """
import atexit, runpy, sys
def report():
    with open('/proc/self/status') as fh:
        peak = next(line.split()[1] for line in fh if line.startswith('VmHWM'))
    print('peak_kb', peak, file=sys.stderr)
atexit.register(report)
sys.argv = ['text2earth', *sys.argv[1:]]
runpy.run_module('engine.cli', run_name='__main__')
"""

LOADED = """
import sys
from engine.model.checkpoint import load_model
load_model(sys.argv[1], 'cpu', precision='fp32')
with open('/proc/self/status') as fh:
    print(next(line.split()[1] for line in fh if line.startswith('VmHWM')))
"""


def _peak_kb(stderr: str) -> int:
    return int(next(line.split()[1] for line in stderr.splitlines()
                    if line.startswith("peak_kb")))


def cli_peaks(side: int, checkpoint: str, tmp, env: dict | None = None) -> dict:
    """Peak RSS of whole CLI runs (each its own process; /proc VmHWM, the process's own
    high-water mark) on ``side`` px rasters, and of a process that only loads the model."""
    import subprocess
    import sys
    from pathlib import Path

    tmp = Path(tmp)
    filled = huge_raster(tmp / f"filled-{side}.tif", side, 120)
    sparse = huge_raster(tmp / f"sparse-{side}.tif", side, 0)
    common = ["--prompt", "a park", "--model", checkpoint, "--device", "cpu", "--precision",
              "fp32", "--seed", "1", "--quiet", "--overwrite"]
    cases = {
        "edit_small_mask": ["edit", "--raster", filled, "--mask", small_mask(side),
                            "--steps", "1"],
        "restyle_small_mask": ["restyle", "--raster", filled, "--mask", small_mask(side),
                               "--steps", "2", "--strength", "0.5"],
        "restyle_whole_sparse": ["restyle", "--raster", sparse, "--steps", "2",
                                 "--strength", "0.5"],
        # The case: every window of the raster planned (11000 at 20000 px); a
        # strength that keeps no step runs none, so the output is the source, copied.
        "restyle_whole_filled_no_step": ["restyle", "--raster", filled, "--steps", "2",
                                         "--strength", "0.1"],
    }
    loaded = subprocess.run([sys.executable, "-c", LOADED, checkpoint], capture_output=True,
                            text=True, check=True, env=env)
    out = {"side_px": side, "loaded_model_mb": round(int(loaded.stdout.split()[-1]) / 1024)}
    for name, argv in cases.items():
        done = subprocess.run([sys.executable, "-c", PEAK_AT_EXIT, *argv, *common, "--out",
                               str(tmp / f"{name}.tif")], capture_output=True, text=True,
                              env=env)
        if done.returncode:
            out[name] = {"error": done.stderr.strip().splitlines()[-1]}
            continue
        peak = _peak_kb(done.stderr) // 1024
        out[name] = {"peak_mb": peak, "above_loaded_mb": peak - out["loaded_model_mb"]}
    return out


def process_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Files a CUDA build of torch maps into every process that imports it, GPU or not: the CUDA
# runtime's libraries (pip's nvidia-* packages), torch's own CUDA libraries, triton's (diffusers
# imports torch._dynamo, which loads triton where it is installed).
CUDA_BUILD_FILES = re.compile(
    r"/nvidia/|/libtorch_(cuda|nvshmem)|/libc10_cuda|/libcaffe2_nvrtc|/triton/")


def cuda_build_bytes(smaps: Iterable[str]) -> int:
    """Resident bytes of the CUDA build's files in a /proc/PID/smaps text: each mapping's
    header line (address perms offset dev inode [path]) then its "Key: value" lines."""
    total, counting = 0, False
    for line in smaps:
        # At most 6 fields: the path, spaces and all, is the sixth.
        head = line.split(maxsplit=5)
        if not head:
            continue
        if not head[0].endswith(":"):
            counting = len(head) == 6 and bool(CUDA_BUILD_FILES.search(head[5]))
        elif counting and head[0] == "Rss:":
            total += int(head[1]) * 1024
    return total


def cuda_build_rss(pid: int) -> int | None:
    """Resident bytes of the CUDA build's files in a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps") as fh:
            return cuda_build_bytes(fh)
    except OSError:
        return None


def process_peak_rss(pid: int) -> int | None:
    """The process's peak resident bytes (VmHWM), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def service_cancel(side: int, checkpoint: str, tmp, env: dict | None = None) -> dict:
    """The service's RSS idle (a small job done), at its peak during a whole-raster restyle
    of a ``side`` px raster (planned at submission, then run), and after that job was
    cancelled at its first step."""
    import sys
    import time
    from pathlib import Path

    from text2earth_qgis.core.service.client import JobCancelled, start_local_service

    tmp = Path(tmp)
    filled = huge_raster(tmp / f"filled-{side}.tif", side, 120)
    small = huge_raster(tmp / "small.tif", 1024, 120)
    service = start_local_service(sys.executable, [str(tmp / "service-out")], checkpoint,
                                  "cpu", env=env)
    service.client.timeout = 900.0  # a whole-raster restyle is planned before it is queued
    job = dict(type="restyle", prompt="a park", model=checkpoint, seed=1, steps=2,
               strength=0.5, overwrite=True)
    pid = service.process.pid
    try:
        warm = service.client.submit({**job, "raster": small, "mask": small_mask(1024),
                                      "out": "warm.tif"})
        service.client.wait(warm["id"])
        time.sleep(1.0)
        idle = process_rss(pid)
        peak, started = idle, time.monotonic()
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                try:
                    peak = max(peak, process_rss(pid))
                except OSError:  # the service ended: its stop or failure is reported
                    return
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        huge = service.client.submit({**job, "raster": filled, "out": "huge.tif"})
        while service.client.status(huge["id"])["step"] < 1:
            time.sleep(0.2)
        service.client.cancel(huge["id"])
        try:
            service.client.wait(huge["id"])
        except JobCancelled:
            pass
        seconds = time.monotonic() - started
        done.set()
        sampler.join()
        time.sleep(2.0)
        after = process_rss(pid)
    finally:
        service.stop()
    mb = 1 << 20
    return {"side_px": side, "idle_mb": round(idle / mb), "during_peak_mb": round(peak / mb),
            "after_cancel_mb": round(after / mb), "after_vs_idle": round(after / idle, 3),
            "job_seconds": round(seconds, 1)}


def report(cli: dict, service: dict) -> str:
    lines = [f"  memory, {cli['side_px']} px square rasters (tiny model, loaded: "
             f"{cli['loaded_model_mb']} MB; goal: peak at most 2048 MB above it)"]
    for name in ("edit_small_mask", "restyle_small_mask", "restyle_whole_sparse",
                 "restyle_whole_filled_no_step"):
        row = cli[name]
        lines.append(f"    {name}: " + (row["error"] if "error" in row else
                                         f"peak {row['peak_mb']} MB "
                                         f"({row['above_loaded_mb']:+d} MB above the model)"))
    lines.append(f"    service, whole-raster restyle of {service['side_px']} px cancelled at its "
                 f"first step: idle {service['idle_mb']} MB, during {service['during_peak_mb']}"
                 f" MB, after {service['after_cancel_mb']} MB ({service['after_vs_idle']:.3f} x "
                 "idle; goal <= 1.1)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.bench memory [--side N]`: the huge-raster figures alone."""
    import argparse
    import json
    import tempfile
    from pathlib import Path

    from engine.model.tiny_checkpoint import write_checkpoint

    parser = argparse.ArgumentParser(prog="python -m engine.bench memory")
    parser.add_argument("--side", type=int, default=HUGE_SIDE,
                        help=f"the rasters' side in px (default {HUGE_SIDE})")
    parser.add_argument("--skip-service", action="store_true",
                        help="only the CLI figures")
    parser.add_argument("--json", default="output/bench-memory.json")
    args = parser.parse_args(argv)
    import engine

    root = str(Path(engine.__file__).resolve().parents[1])  # the children run this engine
    with tempfile.TemporaryDirectory(prefix="t2e-bench-memory-") as tmp:
        checkpoint = str(write_checkpoint(Path(tmp) / "tiny-inpainting", inpainting=True,
                                          seed=1))
        cli = cli_peaks(args.side, checkpoint, tmp, {**os.environ, "PYTHONPATH": root})
        print(json.dumps(cli), flush=True)
        service = ({} if args.skip_service
                   else service_cancel(args.side, checkpoint, tmp, {"PYTHONPATH": root}))
    figures = {"cli": cli, "service": service}
    if service:
        print(report(cli, service), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0
