"""`text2earth batch ITEMS --out-dir D`: many items into COGs and a STAC collection, in this
process, on an embedded local Ray, or on a Ray cluster (--ray-address)."""

from __future__ import annotations

import argparse
import json
import sys

from engine.errors import InputError

DEFAULT_GUIDANCE = 4.0


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_parser(sub) -> None:
    from engine.model.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES
    from text2earth_qgis.core.contract.tiles import DEFAULT_OVERLAP, DEFAULT_TILE

    p = sub.add_parser(
        "batch", help="generate every item of a vector file or CSV into COGs + a STAC collection")
    p.add_argument("items", help="polygons (GeoJSON, GeoPackage, any OGR vector file; their "
                                 "bounding boxes in the layer's CRS) or a CSV with bbox, crs "
                                 "columns; attributes: prompt (required), level or resolution, "
                                 "seed, variations, negative, id")
    p.add_argument("--out-dir", required=True, help="folder of the COGs and collection.json")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel workers, each with its own model (1: in this process; more: "
                        "an embedded local Ray, or the cluster's)")
    p.add_argument("--ray-address", default=None,
                   help="join an existing Ray cluster (host:port or ray://host:port)")
    p.add_argument("--runtime-env", type=_json_object, default=None,
                   help="Ray runtime environment (JSON) that ships the engine to the cluster's "
                        "workers, e.g. '{\"working_dir\": \".\", \"pip\": \"requirements.txt\"}'")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPU share of each worker (default: one GPU each, shared when workers "
                        "outnumber GPUs; none on a CPU-only cluster)")
    p.add_argument("--split-scenes", action="store_true",
                   help="for a few huge extents: items one after the other, each scene's "
                        "windows spread over the workers (outpainting: give the inpainting "
                        "model as --model)")
    p.add_argument("--model", default=None,
                   help="hub id or local folder (default: $TEXT2EARTH_MODEL, else "
                        "lcybuaa/Text2Earth)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, ... (default: the worker's GPU if it has one, else CPU)")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                   help="fp32 (default) gives the same pixels on every worker; auto picks the "
                        "fastest each worker's device runs")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per worker (default: torch's); pin it to get the same "
                        "fp32 pixels from workers of different sizes")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--scheduler", default=DEFAULT_SCHEDULER, choices=SCHEDULER_NAMES)
    p.add_argument("--tile", type=int, default=DEFAULT_TILE)
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    p.add_argument("--max-pixels", type=int, default=None, help="refuse larger items")
    p.add_argument("--demo-fallback", action="store_true",
                   help="without real weights (on this machine), run the batch on built-in tiny "
                        "random weights (outputs named and tagged as pipeline checks)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def demo_model(model: str) -> str | None:
    """The built-in demo checkpoint's folder when ``model`` is not on this machine and cannot
    be downloaded (the choice every other command makes with --demo-fallback), else None."""
    from engine.errors import ModelNotFoundError
    from engine.model.checkpoint import missing_model_advice, resolve_checkpoint
    from engine.model.demo import demo_checkpoint_dir

    try:
        resolve_checkpoint(model)
        return None
    except ModelNotFoundError:
        print(missing_model_advice(model), file=sys.stderr)
        print("Running the batch now on the built-in tiny demo checkpoint (the real Text2Earth "
              "architecture with random weights): the outputs check the pipeline and their "
              "georeferencing, they are not imagery.", file=sys.stderr)
        return str(demo_checkpoint_dir())


def run(args) -> int:
    import os
    from pathlib import Path

    from engine.batch.run import BatchOptions, run_batch
    from engine.batch.tasks import Settings
    from engine.batch.workers import ModelSpec
    from engine.model.checkpoint import DEFAULT_MODEL, MODEL_ENV

    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    model = args.model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    demo = demo_model(model) if args.demo_fallback else None
    model = demo or model
    settings = Settings(model=model, precision=args.precision, steps=args.steps,
                        guidance=args.guidance, scheduler=args.scheduler, tile=args.tile,
                        overlap=args.overlap, max_pixels=args.max_pixels,
                        pipeline_check=demo is not None)
    options = BatchOptions(
        items=Path(args.items), out_dir=Path(args.out_dir), settings=settings,
        spec=ModelSpec(model, args.precision, args.device, threads=args.threads),
        workers=args.workers,
        address=args.ray_address, runtime_env=args.runtime_env,
        gpus_per_worker=args.gpus_per_worker, quiet=args.quiet, split_scenes=args.split_scenes)
    report = run_batch(options)
    print(f"{report.count('done')} done, {report.count('skipped')} already there, "
          f"{report.count('failed')} failed in {report.seconds:.1f} s; catalog "
          f"{report.collection}; report {report.report}", file=sys.stderr)
    for line in (r.error for r in report.results if r.status == "failed"):
        print(f"failed: {line}", file=sys.stderr)
    return 0 if report.count("failed") == 0 else 7
