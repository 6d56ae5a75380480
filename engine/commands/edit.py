"""`text2earth edit` and `text2earth extend`: regenerate inside polygons of a raster, or
outpaint past its edge, into a new file; `run` also runs `restyle` (engine.commands.restyle):
the three are raster jobs with one set-up."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from engine.commands import arguments
from engine.commands.console import progress_bar, quiet_libraries, say, sweep

if TYPE_CHECKING:  # engine.jobs imports torch: only when the command runs
    from engine.jobs.prepared import PreparedJob


def add_parser(sub) -> None:
    ed = sub.add_parser(
        "edit", help="regenerate what lies inside polygons of an existing raster (new file)")
    ed.add_argument("--mask", required=True,
                    help="polygons: a GeoJSON/GeoPackage/Shapefile path, GeoJSON text, or WKT")
    arguments.mask_arguments(ed)
    ed.add_argument("--fill-nodata", action="store_true",
                    help="also generate into nodata/transparent pixels under the mask")
    arguments.raster_job_arguments(ed)
    ed.set_defaults(handler=run)

    ex = sub.add_parser("extend", help="outpaint past a raster's edge on the same grid")
    ex.add_argument("--by", required=True, help="how far: 500m, 1.5km or 200px")
    ex.add_argument("--side", required=True, choices=["east", "west", "north", "south", "all"])
    arguments.raster_job_arguments(ex)
    ex.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Plan (fails fast, before the model loads), load the model, run, report."""
    from engine.geo.grid import DEFAULT_MAX_PIXELS
    from engine.jobs import prepared
    from engine.model.precision import check_precision

    check_precision(args.precision, args.device)
    request = prepared.raster_request(args.command, args, out=args.out,
                                      max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    with prepared.prepare(request) as job:  # bad input fails here, before the model loads
        return run_prepared(args, job)


def run_prepared(args: argparse.Namespace, job: PreparedJob) -> int:
    """The prepared raster job: checkpoint, demo names, load, run, report."""
    from engine.jobs import prepared
    from engine.model.checkpoint import (
        INPAINTING_MODEL,
        MODEL_ENV,
        load_model,
        missing_model_advice,
    )
    from engine.quality.rank_model import job_rank_model

    request, plan = job.request, job.raster_plan
    sweep(args.out, args.quiet)
    restyle = job.kind == prepared.RESTYLE
    strength = f"strength {request.strength:g}, " if restyle else ""
    if not args.quiet:
        print(f"{plan.grid.width} x {plan.grid.height} px, level {plan.level.level}, "
              f"{strength}{plan.windows} window(s) to {'restyle' if restyle else 'regenerate'}",
              file=sys.stderr)
        for note in plan.notes:
            say(f"note: {note}")
    quiet_libraries()
    prepared.choose_weights(job, args.model, None, args.offline or None, args.demo_fallback)
    if job.demo:
        say(missing_model_advice(args.model or INPAINTING_MODEL).replace(
            f"`--model /path/to/Text2Earth` or the environment variable {MODEL_ENV}",
            "`--model /path/to/Text2Earth-inpainting`"))
        prepared.use_demo_names(job)
        say("Running the same job now on the built-in tiny demo inpainting checkpoint: the "
            f"result checks the pipeline and the grid, it is not imagery. Output: {request.out}")
    model = load_model(device=args.device, checkpoint=job.checkpoint, precision=args.precision,
                       compile=args.compile)
    model.pipeline_check = job.demo
    request.ranker = job_rank_model(args.rank_model, args.device, args.offline or None)
    steps = prepared.progress(job)
    with progress_bar(steps.total, steps.label, args.quiet) as callback:
        result = prepared.run(job, model, callback)
    print(result.path)
    if not args.quiet:
        print(f"wrote {result.path}: {result.width} x {result.height} px, level "
              f"{result.level}, {strength}seed {result.seed}", file=sys.stderr)
    return 0
