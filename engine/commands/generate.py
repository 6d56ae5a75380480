"""`text2earth generate`: a GeoTIFF from a prompt over an extent (one image, a scene of
windows, candidates ranked by Git-RSCLIP, or image-to-image from an init raster)."""

from __future__ import annotations

import argparse
import os
import sys

from engine.commands import arguments
from engine.commands.console import progress_bar, quiet_libraries, say, sweep
from text2earth_qgis.core.contract import scale
from text2earth_qgis.core.contract.tiles import DEFAULT_OVERLAP, DEFAULT_TILE


def add_parser(sub) -> None:
    gen = sub.add_parser("generate", help="generate a GeoTIFF from a prompt over an extent")
    gen.add_argument("--bbox", type=arguments.bbox, required=True,
                     help="XMIN,YMIN,XMAX,YMAX in --crs")
    gen.add_argument("--crs", required=True, help="CRS of the bbox: EPSG:XXXX, WKT or PROJ")
    gen.add_argument("--prompt", required=True,
                     help="what to generate; the Git-10M form '17_GOOGLE_LEVEL_...' sets the level")
    gen.add_argument("--negative-prompt", default=None)
    res = gen.add_mutually_exclusive_group()
    res.add_argument("--level", type=int,
                     help=f"Google zoom level {scale.MIN_LEVEL}..{scale.MAX_LEVEL}")
    res.add_argument("--resolution", type=arguments.resolution,
                     help="ground metres per pixel, e.g. 0.6")
    res.add_argument("--scale", type=arguments.map_scale,
                     help="map scale, e.g. 1:5000 (one image pixel per screen pixel)")
    gen.add_argument("--dpi", type=float, default=scale.DEFAULT_DPI, help="screen dpi for --scale")
    gen.add_argument("--out-crs", default=None,
                     help="output CRS instead of the bbox's (EPSG:XXXX, WKT, or 'utm')")
    arguments.sampling_arguments(gen, guidance=4.0)
    gen.add_argument("--model", default=None,
                     help="hub id or local folder "
                          "(default: $TEXT2EARTH_MODEL, else lcybuaa/Text2Earth)")
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    arguments.speed_arguments(gen)
    gen.add_argument("--max-pixels", type=int, default=None, help="refuse larger outputs")
    gen.add_argument("--tile", type=int, default=DEFAULT_TILE,
                     help="window size in px for scenes larger than one window (default "
                          f"{DEFAULT_TILE}, the model's training size; larger windows are "
                          "untested with the real weights)")
    gen.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                     help=f"window overlap in px (default {DEFAULT_OVERLAP})")
    gen.add_argument("--scene-method", default="auto",
                     choices=["auto", "outpaint", "joint", "cascade"],
                     help="outpaint with the inpainting model (auto when it is available), "
                          "joint denoising with the text-to-image model, or cascade: the "
                          "extent at a coarse level first, refined level by level")
    gen.add_argument("--cascade-strengths", type=arguments.strengths, default=None,
                     help="cascade: image-to-image strength of each level step, coarse to "
                          "fine, e.g. 0.6,0.6,0.5 (default: 0.6 per step, 0.5 into the target)")
    gen.add_argument("--cascade-coarse-level", type=int, default=None,
                     help="cascade: the level to start from (default: target - 3, or coarser "
                          "until the extent fits in two windows)")
    gen.add_argument("--inpaint-model", default=None,
                     help="inpainting model for scenes (default: lcybuaa/Text2Earth-inpainting)")
    gen.add_argument("--regions", default=None,
                     help="GeoJSON FeatureCollection of polygons with a 'prompt' property: "
                          "scene windows inside a polygon use its prompt")
    gen.add_argument("--init-raster", default=None,
                     help="start from this raster (any CRS: a photo, a land-cover map, a "
                          "rendered map, a sketch), warped onto the output grid, then "
                          "image-to-image")
    gen.add_argument("--strength", type=float, default=0.6,
                     help="with --init-raster, how far from it, 0..1: 0 returns it warped, "
                          "1 ignores it (default 0.6)")
    gen.add_argument("--no-resume", action="store_true",
                     help="start a scene afresh even if a stopped run of it left its windows")
    gen.add_argument("--candidates", type=int, default=1, metavar="N",
                     help="make N images (1..8; scenes: N whole scenes) with seeds derived from "
                          "--seed and keep the one Git-RSCLIP scores highest")
    gen.add_argument("--keep-candidates", action="store_true",
                     help="also write the other candidates as <out>_c<K>.tif")
    gen.add_argument("--rank-model", default=None,
                     help="Git-RSCLIP for scores and ranking, hub id or local folder, or none "
                          + arguments.RANK_MODEL_DEFAULT)
    arguments.output_arguments(gen)
    gen.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.geo.grid import DEFAULT_MAX_PIXELS
    from engine.jobs import prepared
    from engine.jobs.model_choice import wants_inpainting
    from engine.model.checkpoint import DEFAULT_MODEL, MODEL_ENV, load_model, missing_model_advice
    from engine.model.precision import check_precision
    from engine.quality.rank_model import job_rank_model

    request = prepared.generate_request(
        args, out=args.out, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        resume=not args.no_resume)
    if args.regions:
        from engine.geo.regions import read_regions_file

        request.regions, request.regions_crs = read_regions_file(args.regions)
    job = prepared.prepare(request)  # bad input fails here, before minutes of model loading
    grid = job.grid
    sweep(args.out, args.quiet)
    precision = check_precision(args.precision, args.device)
    if not args.quiet:
        print(
            f"{grid.width} x {grid.height} px in {grid.crs.name}, {grid.level_choice.message}, "
            f"{grid.ground_resolution:.3g} m/px on the ground, precision {precision}",
            file=sys.stderr,
        )
        for note in grid.notes:  # e.g. pixels far from square at the extent's edges
            say(f"note: {note}")
    quiet_libraries()
    prepared.choose_weights(job, args.model, args.inpaint_model, args.offline or None,
                            args.demo_fallback)
    if job.demo:
        say(missing_model_advice(args.model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL))
        prepared.use_demo_names(job)  # the renamed output must be free too, before the work
        say(
            "Running the same job now on the built-in tiny demo checkpoint (the real "
            "Text2Earth architecture with random weights): the result checks the whole "
            f"pipeline and its georeferencing, it is not imagery. Output: {request.out}"
        )
    model = load_model(device=args.device, checkpoint=job.checkpoint, precision=args.precision,
                       compile=args.compile)
    model.pipeline_check = job.demo
    if wants_inpainting(request, grid) and not model.inpainting and not args.quiet:
        say("No inpainting model on this machine: building the scene by joint denoising "
            "with the text-to-image model (--inpaint-model sets one).")
    request.ranker = job_rank_model(args.rank_model, args.device, args.offline or None)
    if request.ranker is None and request.candidates > 1 and not args.quiet:
        say(f"No rank model (Git-RSCLIP): all {request.candidates} candidates are kept, in "
            "generation order (--rank-model names one).")
    steps = prepared.progress(job, model.inpainting, model)
    with progress_bar(steps.total, steps.label, args.quiet) as callback:
        result = prepared.run(job, model, callback)
    left, bottom, right, top = result.grid.bounds
    print(result.path)
    if not args.quiet:
        print(
            f"wrote {result.path}: {result.grid.width} x {result.grid.height} px, level "
            f"{result.grid.level}, seed {result.seed}, bounds {left:.6f},{bottom:.6f},"
            f"{right:.6f},{top:.6f}",
            file=sys.stderr,
        )
        for c in result.candidates if len(result.candidates) > 1 else []:
            score = "no score" if c.score is None else f"score {c.score:.4f}"
            print(f"candidate {c.index}: seed {c.seed}, {score}, "
                  f"{c.path if c.path is not None else 'not kept'}", file=sys.stderr)
        if result.score is not None:
            print(f"Git-RSCLIP score {result.score:.4f}", file=sys.stderr)
    return 0
