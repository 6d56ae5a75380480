"""`text2earth restyle`: regenerate an existing raster from its own pixels (image-to-image
with the prompt and the level), on the source's grid, bands, data type and nodata; --mask
limits it to polygons, as `edit` does."""

from __future__ import annotations

import argparse
import sys


def _strength(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") \
            from None


def add_parser(sub) -> None:
    from engine import cli

    p = sub.add_parser(
        "restyle", help="regenerate an existing raster from its own pixels (image-to-image; "
                        "new file on the same grid)")
    p.add_argument("--strength", type=_strength, default=0.6,
                   help="how far from the source, 0..1: 0 returns it unchanged, 1 ignores its "
                        "pixels (default 0.6); int(steps * strength) steps run")
    p.add_argument("--mask", default=None,
                   help="optional polygons to restyle only inside (as edit): a vector file, "
                        "GeoJSON text or WKT; default: the whole raster")
    cli.mask_arguments(p)
    cli._raster_job_arguments(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    """Plan (fails fast, before the model loads), load the model, run, report."""
    from engine import cli
    from engine.geo.grid import DEFAULT_MAX_PIXELS
    from engine.jobs.edit import open_source
    from engine.jobs.model_choice import choose_inpainting_checkpoint
    from engine.jobs.restyle import RestyleRequest, plan_restyle, restyle_raster
    from engine.model.checkpoint import INPAINTING_MODEL, load_model, missing_model_advice
    from engine.model.demo import demo_checkpoint_dir, pipeline_check_path
    from engine.model.img2img import kept_steps
    from engine.model.precision import check_precision

    check_precision(args.precision, args.device)
    request = RestyleRequest(
        raster=args.raster, prompt=args.prompt, out=args.out, strength=args.strength,
        mask=args.mask, mask_crs=args.mask_crs, mask_layer=args.mask_layer,
        dilate=args.dilate, feather=args.feather,
        negative_prompt=args.negative_prompt, level=args.level, seed=args.seed,
        steps=args.steps, guidance=args.guidance, scheduler=args.scheduler, bands=args.bands,
        tile=args.tile, overlap=args.overlap, overwrite=args.overwrite,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
    )
    with open_source(request.raster) as src:
        plan = plan_restyle(request, src)  # bad input fails here, before the model loads
    cli._sweep(args.out, args.quiet)
    if not args.quiet:
        print(f"{plan.grid.width} x {plan.grid.height} px, level {plan.level.level}, "
              f"strength {request.strength:g}, {plan.windows} window(s) to restyle",
              file=sys.stderr)
        for note in plan.notes:
            cli._say(f"note: {note}")
    cli._quiet_libraries()
    checkpoint, demo = choose_inpainting_checkpoint(
        args.model, args.offline or None, args.demo_fallback, demo_checkpoint_dir)
    if demo:
        cli._say(missing_model_advice(args.model or INPAINTING_MODEL))
        request.out = pipeline_check_path(args.out)
        request.pipeline_check = True
        cli._say("Running the same job now on the built-in tiny demo inpainting checkpoint: "
                 "the result checks the pipeline and the grid, it is not imagery. Output: "
                 f"{request.out}")
        with open_source(request.raster) as src:
            plan_restyle(request, src)
    model = load_model(device=args.device, checkpoint=checkpoint, precision=args.precision,
                       compile=args.compile)
    total = kept_steps(request.steps, request.strength) * plan.windows
    with cli.progress_bar(total, f"{plan.windows} windows", args.quiet) as callback:
        result = restyle_raster(request, model, callback)
    print(result.path)
    if not args.quiet:
        print(f"wrote {result.path}: {result.width} x {result.height} px, level "
              f"{result.level}, strength {request.strength:g}, seed {result.seed}",
              file=sys.stderr)
    return 0
