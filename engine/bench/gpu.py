"""`make bench-gpu` (`python -m engine.bench gpu`): the GPU figures in one short device call.

Full-size random weights of the real architecture (an SD2-class UNet with the level's class
embedding), fp16, 50 steps, Euler, guidance 4, one 256 px and one 512 px square image:

- reference fp16 eager: the bare diffusers loop a user would write (engine.bench.baseline);
- engine fp16 eager: the engine's pipeline after ``accelerate(compile=False)`` (the
  ``--no-compile`` path: channels-last on CUDA);
- engine fp16 compiled: after ``accelerate(compile=True)`` (torch.compile of the UNet,
  reduce-overhead / CUDA graphs on CUDA), its compile time shown as the row's warm-up.

Per row: seconds per image (median and min of a few repeats, each a whole image: text
encoding, denoising and the fp32 VAE decode), it/s (= steps / median s per image), the peak GPU
memory (torch.cuda.max_memory_allocated, reset before every image; peak RSS on a CPU) and the
first call's time. The run keeps to a time budget (the device call is planned at 8 minutes):
a row that would not fit is skipped with a line saying so, and a watchdog ends the process
soon after the budget. Every finished row is written to the JSON at once, so a killed run
still leaves its rows. ``--smoke`` runs the same plumbing on a CPU (tiny model, fp32, 2 steps,
torch.compile with the "eager" backend) in seconds.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from engine.bench.baseline import GUIDANCE, LEVEL, bare_loop, build_model, sync

# Public H100 figures for SD2.1 (the same UNet size), 512 px x 50 steps, s/image.
ANCHORS = {"tensorrt_s": 0.7, "torch_compile_s": 1.1}
ANCHOR_LINE = ("anchors: SD2.1 512 px x 50 steps on an H100: about 0.7 s/image with TensorRT, "
               "1.1 s/image with torch.compile")
BUDGET_S = 360.0  # the rows' share of an 8-minute device call (install, imports, watchdog)
WATCHDOG_GRACE_S = 45.0  # after the budget, the row in flight gets this long before the exit
FIRST_COMPILE_S = 150.0  # assumed for the first compiled row: inductor on a cold cache
PROMPT = "a park"
SEED = 1


@dataclass(frozen=True)
class Options:
    smoke: bool = False
    device: str | None = None
    sizes: tuple[int, ...] = (256, 512)
    steps: int = 50
    repeats: int = 3
    budget_s: float = BUDGET_S

    @property
    def precision(self) -> str:
        return "fp32" if self.smoke else "fp16"

    @property
    def compile_backend(self) -> str:
        # "eager": dynamo traces the whole UNet (fullgraph) but generates no code: seconds on CPU.
        return "eager" if self.smoke else "inductor"


@dataclass
class Clock:
    budget_s: float
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def measure(call: Callable[[], object], device: torch.device,
            watch_rss: bool = False) -> tuple[float, int | None]:
    """(seconds of one call, its peak memory in bytes): CUDA's peak allocation since a reset
    just before it; on a CPU, with ``watch_rss``, the process's peak resident memory while it
    ran (sampled by a thread, which slows small CPU calls: never on timed calls)."""
    if device.type != "cuda":
        if not watch_rss:
            start = time.perf_counter()
            call()
            return time.perf_counter() - start, None
        from engine.bench.memory import peak_growth

        start = time.perf_counter()
        peak, _ = peak_growth(call, every_s=0.05)
        return time.perf_counter() - start, peak
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    call()
    sync(device)
    return time.perf_counter() - start, torch.cuda.max_memory_allocated(device)


def summarise(name: str, size: int, steps: int, warm_up: tuple[float, int | None],
              samples: list[tuple[float, int | None]]) -> dict:
    """A row from its first call and its timed calls (the peak: the timed calls' on CUDA, the
    first call's on a CPU)."""
    times = [s for s, _ in samples]
    median = statistics.median(times)
    peak = max(p for _, p in [warm_up, *samples] if p is not None)
    return {"row": name, "size": size, "steps": steps, "repeats": len(samples),
            "s_per_image": round(median, 4), "s_per_image_min": round(min(times), 4),
            "it_per_s": round(steps / median, 2), "peak_memory_mib": round(peak / 2**20, 1),
            "warm_up_s": round(warm_up[0], 2)}


class Rows:
    """The run's result: rows, skipped rows and facts, written out after every change."""

    def __init__(self, facts: dict, json_path: Path | None, clock: Clock):
        self.result = {**facts, "rows": [], "skipped": [], "complete": False}
        self.json_path = json_path
        self.clock = clock

    def add(self, row: dict) -> None:
        self.result["rows"].append(row)
        self.save()

    def skip(self, name: str, size: int, why: str) -> None:
        self.result["skipped"].append({"row": name, "size": size, "why": why})
        print(f"  skipped: {name} {size} px: {why}", flush=True)
        self.save()

    def save(self) -> None:
        self.result["elapsed_s"] = round(self.clock.elapsed(), 1)
        if self.json_path is None:
            return
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.json_path.with_name(self.json_path.name + ".tmp")
        tmp.write_text(json.dumps(self.result, indent=2))
        tmp.replace(self.json_path)


def run_row(rows: Rows, name: str, size: int, opts: Options, device: torch.device,
            call: Callable[[], object], estimate_s: float) -> dict | None:
    """One row: a first call (allocations, lazy imports, compilation), then up to
    ``opts.repeats`` timed images while the budget lasts."""
    if estimate_s > rows.clock.left():
        rows.skip(name, size, f"needs about {estimate_s:.0f} s, {max(0.0, rows.clock.left()):.0f}"
                  f" s of the {opts.budget_s:.0f} s budget left")
        return None
    try:
        warm_up = measure(call, device, watch_rss=True)
        if device.type == "cuda":
            warm_up = (warm_up[0], None)  # compilation's workspace is not the image's peak
        samples = []
        while len(samples) < opts.repeats:
            last = samples[-1][0] if samples else warm_up[0]
            if samples and last > rows.clock.left():
                break  # the budget ends here: keep the repeats already timed
            samples.append(measure(call, device))
    except Exception as exc:  # noqa: BLE001 - one failing row must not lose the others
        row = {"row": name, "size": size, "error": f"{type(exc).__name__}: {exc}"[:500]}
        print(f"  FAILED: {name} {size} px: {row['error']}", flush=True)
        rows.add(row)
        return row
    row = summarise(name, size, opts.steps, warm_up, samples)
    print(f"  {format_row(row)}", flush=True)
    rows.add(row)
    return row


def format_row(row: dict) -> str:
    if "error" in row:
        return f"{row['row']:<22} {row['size']:>4}   failed: {row['error']}"
    return (f"{row['row']:<22} {row['size']:>4} {row['s_per_image']:>9.3f} "
            f"{row['s_per_image_min']:>9.3f} {row['it_per_s']:>8.2f} "
            f"{row['peak_memory_mib']:>10.1f} {row['warm_up_s']:>10.2f} {row['repeats']:>4}")


HEADER = (f"  {'row':<22} {'px':>4} {'s/image':>9} {'min s':>9} {'it/s':>8} {'peak MiB':>10} "
          f"{'warm-up s':>10} {'reps':>4}")


def package_versions() -> dict:
    names = ("torch", "diffusers", "transformers", "huggingface_hub", "tokenizers",
             "open_clip_torch")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    return versions


def run(opts: Options, json_path: Path | None = None) -> dict:
    """All rows within ``opts.budget_s``; the result (also written to ``json_path``)."""
    from engine.model.accelerate import accelerate
    from engine.model.device import select_device

    clock = Clock(opts.budget_s)
    device, _ = select_device(opts.device)
    if device.type != "cuda" and not opts.smoke:
        raise SystemExit("the GPU figures need a CUDA GPU and torch sees none here; "
                         "--smoke runs the same plumbing on a CPU")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    model_kind = "tiny random" if opts.smoke else "full-size random"
    rows = Rows({"bench": "gpu", "smoke": opts.smoke, "device": name or device.type,
                 "device_type": device.type, "model": model_kind, "precision": opts.precision,
                 "steps": opts.steps, "sizes": list(opts.sizes), "scheduler": "euler",
                 "guidance": GUIDANCE, "budget_s": opts.budget_s,
                 "memory": ("torch.cuda.max_memory_allocated" if device.type == "cuda"
                            else "process peak RSS"),
                 "anchors": ANCHORS, "versions": package_versions()}, json_path, clock)
    print(f"GPU figures on {rows.result['device']} ({device.type}): {model_kind} Text2Earth "
          f"weights, {opts.precision}, {opts.steps} steps, Euler, guidance {GUIDANCE}, sizes "
          f"{', '.join(map(str, opts.sizes))} px; time budget {opts.budget_s:.0f} s (rows that "
          "would not fit are skipped)", flush=True)
    model = build_model(not opts.smoke, opts.device, opts.precision)
    pipe = model.pipeline
    pipe.use_scheduler("euler")
    rows.result["model_built_s"] = round(clock.elapsed(), 1)
    print(f"  model built in {clock.elapsed():.1f} s\n{HEADER}", flush=True)

    def engine_image(size: int) -> Callable[[], object]:
        return lambda: pipe(PROMPT, level=LEVEL, height=size, width=size,
                            num_inference_steps=opts.steps, guidance_scale=GUIDANCE,
                            generator=torch.Generator("cpu").manual_seed(SEED))

    def estimate(done: dict | None, extra_s: float = 0.0) -> float:
        """A row's likely cost from an earlier row at the same size (unknown: 0, it runs)."""
        if done is None or "error" in done:
            return extra_s
        return extra_s + (opts.repeats + 1) * done["s_per_image"]

    p = opts.precision
    reference = {}
    for size in opts.sizes:  # plain modules first: the reference is what a user would run
        reference[size] = run_row(
            rows, f"reference {p} eager", size, opts, device,
            lambda size=size: bare_loop(pipe, PROMPT, opts.steps, SEED, size=size), 0.0)
    eager = {}
    rows.result["accelerate_eager"] = accelerate(pipe, device, compile=False).as_dict()
    for size in opts.sizes:
        eager[size] = run_row(rows, f"engine {p} eager", size, opts, device, engine_image(size),
                              estimate(reference[size]))
    speed = accelerate(pipe, device, compile=True, compile_backend=opts.compile_backend)
    rows.result["accelerate"] = speed.as_dict()
    compile_s = 0.0 if opts.smoke else FIRST_COMPILE_S
    for size in opts.sizes:
        row = run_row(rows, f"engine {p} compiled", size, opts, device, engine_image(size),
                      estimate(eager[size], compile_s))
        if row and "error" not in row:
            compile_s = row["warm_up_s"]
    rows.result["complete"] = True
    rows.save()
    return rows.result


def report(result: dict) -> None:
    """The summary table (every row, skipped rows, the anchors beside)."""
    print(f"summary ({result['device']}, {result['model']}, {result['precision']}, "
          f"{result['steps']} steps, {result['elapsed_s']:.0f} s):\n{HEADER}")
    for row in result["rows"]:
        print(f"  {format_row(row)}")
    for skipped in result["skipped"]:
        print(f"  skipped: {skipped['row']} {skipped['size']} px: {skipped['why']}")
    compiled = [r for r in result["rows"]
                if r["row"].endswith("compiled") and r["size"] == 512 and "error" not in r]
    here = (f"; this run's engine compiled 512 px: {compiled[0]['s_per_image']:.3f} s/image"
            if compiled else "")
    print(f"  {ANCHOR_LINE}{here}", flush=True)


def default_json_path() -> Path | None:
    """$OUT/bench-gpu.json where $OUT names a folder (the device machine's output folder)."""
    out = os.environ.get("OUT")
    return Path(out) / "bench-gpu.json" if out and Path(out).is_dir() else None


def sides(text: str) -> tuple[int, ...]:
    """--sizes: comma-separated square sides in px, each a positive multiple of 8."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v <= 0 or v % 8 for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give sides in px, each a positive multiple of 8, e.g. 256,512")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench gpu",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="the plumbing on a CPU: tiny model, fp32, 2 steps, 64 and 128 px")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=sides, default=None,
                        help="comma-separated sides in px (default 256,512; smoke 64,128)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"seconds for all rows (default {BUDGET_S:.0f}; smoke 300)")
    parser.add_argument("--json", default=None,
                        help="where to write the result (default $OUT/bench-gpu.json if $OUT "
                             "is a folder, else nowhere: the last line printed is the JSON)")
    args = parser.parse_args(argv)
    smoke = Options(smoke=True, sizes=(64, 128), steps=2, repeats=2, budget_s=300.0)
    base = smoke if args.smoke else Options()
    opts = Options(
        smoke=args.smoke, device=args.device,
        sizes=args.sizes or base.sizes,
        steps=base.steps if args.steps is None else args.steps,
        repeats=base.repeats if args.repeats is None else args.repeats,
        budget_s=base.budget_s if args.budget_s is None else args.budget_s)
    if min(opts.steps, opts.repeats) < 1 or opts.budget_s <= 0:
        parser.error("--steps and --repeats take 1 or more, --budget-s more than 0 seconds")
    json_path = Path(args.json) if args.json else default_json_path()

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    # A compile that never ends would otherwise hold the device until the call's timeout.
    faulthandler.dump_traceback_later(opts.budget_s + WATCHDOG_GRACE_S, exit=True,
                                      file=sys.__stderr__)  # the process's: pytest swaps stderr
    try:
        result = run(opts, json_path)
    finally:
        faulthandler.cancel_dump_traceback_later()
    report(result)
    if json_path is not None:
        print(f"  written to {json_path}")
    print(json.dumps(result), flush=True)
    failed = any("error" in r for r in result["rows"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
