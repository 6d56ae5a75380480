"""`text2earth generate | edit | extend | serve | clean | resume --list | levels`: one clear
line and a non-zero exit for every bad input."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import textwrap
import warnings
from contextlib import contextmanager

from engine import __version__
from engine.errors import InputError, Text2EarthError
from engine.model.demo import demo_checkpoint_dir, pipeline_check_path
from engine.model.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES
from text2earth_qgis.core.contract import scale
from text2earth_qgis.core.contract.tiles import DEFAULT_OVERLAP, DEFAULT_TILE

# Subcommands in their own modules (engine/commands/): each adds its parser with handler=run.
# One line per module, so that adding a command touches nothing else here.
COMMAND_MODULES: tuple[str, ...] = (
    "engine.commands.restyle",
    "engine.commands.batch",
    "engine.commands.prompts",
    "engine.commands.eval",
    "engine.commands.score",
    "engine.commands.label",
)


def _bbox(text: str) -> tuple[float, float, float, float]:
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"expected XMIN,YMIN,XMAX,YMAX, got {text!r}")
    try:
        return tuple(float(p) for p in parts)  # type: ignore[return-value]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected four numbers, got {text!r}") from None


def _scale(text: str) -> float:
    try:
        return scale.parse_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _resolution(text: str) -> float:
    cleaned = text.strip().lower().removesuffix("m/px").removesuffix("m").strip()
    try:
        value = float(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected metres per pixel, got {text!r}") from None
    return value


def _strengths(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers in 0..1 separated by commas, got {text!r}") from None


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments give one line, like every other bad input, not a page of usage."""

    def error(self, message: str):
        self.exit(2, f"text2earth: error: {message} (see {self.prog} --help)\n")


def _add_speed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="arithmetic: auto picks fp16 on CUDA, bf16 on CPUs with native "
                             "bf16, else fp32 (the exact mode, reproducing reference pixels)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the UNet (default: on CUDA only)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="text2earth",
        description="Generate georeferenced synthetic remote-sensing imagery with Text2Earth.",
    )
    parser.add_argument("--version", action="version", version=f"text2earth {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a GeoTIFF from a prompt over an extent")
    gen.add_argument("--bbox", type=_bbox, required=True, help="XMIN,YMIN,XMAX,YMAX in --crs")
    gen.add_argument("--crs", required=True, help="CRS of the bbox: EPSG:XXXX, WKT or PROJ")
    gen.add_argument("--prompt", required=True,
                     help="what to generate; the Git-10M form '17_GOOGLE_LEVEL_...' sets the level")
    gen.add_argument("--negative-prompt", default=None)
    res = gen.add_mutually_exclusive_group()
    res.add_argument("--level", type=int,
                     help=f"Google zoom level {scale.MIN_LEVEL}..{scale.MAX_LEVEL}")
    res.add_argument("--resolution", type=_resolution, help="ground metres per pixel, e.g. 0.6")
    res.add_argument("--scale", type=_scale,
                     help="map scale, e.g. 1:5000 (one image pixel per screen pixel)")
    gen.add_argument("--dpi", type=float, default=scale.DEFAULT_DPI, help="screen dpi for --scale")
    gen.add_argument("--out-crs", default=None,
                     help="output CRS instead of the bbox's (EPSG:XXXX, WKT, or 'utm')")
    _sampling_arguments(gen, guidance=4.0)
    gen.add_argument("--model", default=None,
                     help="hub id or local folder "
                          "(default: $TEXT2EARTH_MODEL, else lcybuaa/Text2Earth)")
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    _add_speed_options(gen)
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
    gen.add_argument("--cascade-strengths", type=_strengths, default=None,
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
                          "(default: $TEXT2EARTH_RANK_MODEL, else lcybuaa/Git-RSCLIP when "
                          "already on this machine)")
    _output_arguments(gen)

    srv = sub.add_parser("serve", help="run the local job service (HTTP + JSON)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    srv.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    srv.add_argument("--port-file", default=None, help="write the port number here")
    srv.add_argument("--model", default=None, help="hub id or local folder (see generate)")
    srv.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    _add_speed_options(srv)
    srv.add_argument("--output-dir", action="append", default=None,
                     help="folder jobs may write to (repeatable; the first takes bare names)")
    srv.add_argument("--token-file", default=None,
                     help="require 'Authorization: Bearer <token>'; the token is read from "
                          "this file, or created there (mode 0600)")
    srv.add_argument("--max-pixels", type=int, default=None, help="refuse larger outputs")
    srv.add_argument("--demo-fallback", action="store_true",
                     help="without real weights, serve the built-in tiny demo checkpoint")
    srv.add_argument("--rank-model", default=None,
                     help="Git-RSCLIP for jobs' scores and candidates, hub id, folder or none "
                          "(default: $TEXT2EARTH_RANK_MODEL, else lcybuaa/Git-RSCLIP when "
                          "already on this machine)")

    ed = sub.add_parser(
        "edit", help="regenerate what lies inside polygons of an existing raster (new file)")
    ed.add_argument("--mask", required=True,
                    help="polygons: a GeoJSON/GeoPackage/Shapefile path, GeoJSON text, or WKT")
    mask_arguments(ed)
    ed.add_argument("--fill-nodata", action="store_true",
                    help="also generate into nodata/transparent pixels under the mask")
    _raster_job_arguments(ed)

    ex = sub.add_parser("extend", help="outpaint past a raster's edge on the same grid")
    ex.add_argument("--by", required=True, help="how far: 500m, 1.5km or 200px")
    ex.add_argument("--side", required=True, choices=["east", "west", "north", "south", "all"])
    _raster_job_arguments(ex)

    cl = sub.add_parser("clean", help="remove Text2Earth's leftovers from a folder: temp files "
                                      "of stopped jobs and stopped scenes' scratch")
    cl.add_argument("dir", nargs="?", default=".", help="the output folder (default: here)")
    cl.add_argument("-r", "--recursive", action="store_true", help="also its subfolders")
    rs = sub.add_parser("resume", help="stopped scenes that rerunning their command resumes")
    rs.add_argument("--list", action="store_true", required=True,
                    help="list them (a scene resumes when its generate command runs again)")
    rs.add_argument("dir", nargs="?", default=".", help="the output folder (default: here)")
    rs.add_argument("-r", "--recursive", action="store_true", help="also its subfolders")

    lv = sub.add_parser("levels", help="print the level table")
    lv.add_argument("--lat", type=float, default=0.0, help="latitude for ground m/px")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def _bands(text: str) -> list[int]:
    try:
        bands = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected band numbers such as 3,2,1, got {text!r}") \
            from None
    if len(bands) not in (1, 3):
        raise argparse.ArgumentTypeError("give three bands (R,G,B) or one (gray)")
    return bands


def _raster_job_arguments(p: argparse.ArgumentParser) -> None:
    """What edit and extend share."""
    p.add_argument("--raster", required=True, help="the source raster (never modified)")
    p.add_argument("--prompt", required=True, help="what the new pixels show")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--level", type=int, default=None,
                   help="zoom level 10..18 (default: from the raster's ground resolution)")
    p.add_argument("--bands", type=_bands, default=None,
                   help="1-based R,G,B bands (default: from the colour interpretation)")
    _sampling_arguments(p, guidance=3.5)
    p.add_argument("--model", default=None,
                   help="inpainting model, hub id or local folder "
                        "(default: lcybuaa/Text2Earth-inpainting)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    _add_speed_options(p)
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help=f"model window size in px (default {DEFAULT_TILE}, the training size; "
                        "larger windows are untested with the real weights)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help=f"window overlap in px (default {DEFAULT_OVERLAP})")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse larger work")
    p.add_argument("--rank-model", default=None,
                   help="Git-RSCLIP for the regenerated areas' score, hub id, folder or none "
                        "(default: $TEXT2EARTH_RANK_MODEL, else lcybuaa/Git-RSCLIP when "
                        "already on this machine)")
    _output_arguments(p)


def mask_arguments(p: argparse.ArgumentParser) -> None:
    """How the mask polygons are read and grown (edit, restyle): all but --mask itself."""
    p.add_argument("--mask-crs", default=None,
                   help="CRS of the mask (default: the file's; GeoJSON lon/lat; WKT the "
                        "raster's)")
    p.add_argument("--mask-layer", default=None, help="layer of a multi-layer vector file")
    p.add_argument("--dilate", type=int, default=4, help="grow the polygons by N pixels")
    p.add_argument("--feather", type=int, default=4,
                   help="fade new pixels in over N pixels at the grown mask's edge")


def _sampling_arguments(p: argparse.ArgumentParser, guidance: float) -> None:
    p.add_argument("--seed", type=int, default=None, help="random if not given (recorded)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=guidance)
    p.add_argument("--scheduler", default=DEFAULT_SCHEDULER, choices=SCHEDULER_NAMES)


def _output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output GeoTIFF path (a new file)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--offline", action="store_true", help="never try to download weights")
    p.add_argument("--demo-fallback", action="store_true",
                   help="without real weights, run the same job on built-in tiny random weights "
                        "(output named and tagged as a pipeline check)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _say(text: str) -> None:
    print(textwrap.fill(text, width=100), file=sys.stderr)


def _quiet_libraries() -> None:
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


@contextmanager
def progress_bar(total: int, label: str, quiet: bool):
    """A step callback drawing a progress bar on stderr (None when quiet)."""
    if quiet:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="step", file=sys.stderr)

    def callback(pipe, step, timestep, tensors):
        bar.update(1)
        return tensors

    try:
        yield callback
    finally:
        bar.close()


def cmd_levels(args) -> int:
    try:
        rows = scale.level_table(args.lat)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    ground_header = f"ground m/px at {args.lat:.2f} deg"
    print(f"{'level':>5}  {'nominal m/px':>12}  {ground_header:>24}")
    for level, nominal, ground in rows:
        print(f"{level:>5}  {nominal:>12g}  {ground:>24.4f}")
    return 0


def _sweep(out: str, quiet: bool) -> None:
    """Remove stale leftovers of our own naming beside the output (killed runs' temp files)."""
    from pathlib import Path

    from engine.jobs.leftovers import remove_stale

    folder = Path(out).expanduser().parent
    try:
        removed = remove_stale(folder) if folder.is_dir() else []
    except OSError:
        return
    if removed and not quiet:
        _say(f"removed {len(removed)} stale temp file(s) of stopped jobs from {folder}")


def cmd_clean(args) -> int:
    from pathlib import Path

    from engine.jobs.leftovers import remove_stale

    folder = Path(args.dir).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    removed = remove_stale(folder, args.recursive, everything=True)
    for path in removed:
        print(path)
    print(f"removed {len(removed)} file(s) left by stopped jobs", file=sys.stderr)
    return 0


def cmd_resume(args) -> int:
    from pathlib import Path

    from engine.jobs.leftovers import resumable_scenes

    folder = Path(args.dir).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    scenes = resumable_scenes(folder, args.recursive)
    for scene in scenes:
        of = f"/{scene.windows}" if scene.windows else ""
        print(f"{scene.out}\t{scene.done}{of} windows done\t{scene.size / 2**20:.1f} MiB scratch"
              f"\t{scene.age_s / 3600:.1f} h ago")
    print(f"{len(scenes)} stopped scene(s): run the same generate command to resume one, or "
          f"`text2earth clean {args.dir}` to remove them", file=sys.stderr)
    return 0


def cmd_generate(args) -> int:
    from engine.geo.grid import DEFAULT_MAX_PIXELS
    from engine.jobs.generate import GenerateRequest, generate, plan, scene_plan
    from engine.jobs.model_choice import choose_checkpoint, wants_inpainting
    from engine.model.checkpoint import (
        DEFAULT_MODEL,
        MODEL_ENV,
        load_model,
        missing_model_advice,
    )
    from engine.model.precision import check_precision
    from engine.quality.rank_model import job_rank_model

    request = GenerateRequest(
        bbox=args.bbox, crs=args.crs, prompt=args.prompt, out=args.out,
        negative_prompt=args.negative_prompt, level=args.level, resolution=args.resolution,
        scale_denominator=args.scale, dpi=args.dpi, out_crs=args.out_crs, seed=args.seed,
        steps=args.steps, guidance=args.guidance, scheduler=args.scheduler,
        overwrite=args.overwrite, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        tile=args.tile, overlap=args.overlap, scene_method=args.scene_method,
        resume=not args.no_resume, candidates=args.candidates,
        keep_candidates=args.keep_candidates, init_raster=args.init_raster,
        strength=args.strength, cascade_strengths=args.cascade_strengths,
        cascade_coarse_level=args.cascade_coarse_level,
    )
    if args.regions:
        from engine.geo.regions import read_regions_file

        request.regions, request.regions_crs = read_regions_file(args.regions)
    grid = plan(request)  # bad input fails here, before minutes of model loading
    _sweep(args.out, args.quiet)
    precision = check_precision(args.precision, args.device)
    if not args.quiet:
        print(
            f"{grid.width} x {grid.height} px in {grid.crs.name}, {grid.level_choice.message}, "
            f"{grid.ground_resolution:.3g} m/px on the ground, precision {precision}",
            file=sys.stderr,
        )
        for note in grid.notes:  # e.g. pixels far from square at the extent's edges
            _say(f"note: {note}")
    _quiet_libraries()
    windows = scene_plan(request, grid)
    checkpoint, demo = choose_checkpoint(
        request, grid, args.model, args.inpaint_model, args.offline or None,
        args.demo_fallback, demo_checkpoint_dir,
    )
    if demo:
        _say(missing_model_advice(args.model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL))
        request.out = pipeline_check_path(args.out)
        request.pipeline_check = True
        _say(
            "Running the same job now on the built-in tiny demo checkpoint (the real "
            "Text2Earth architecture with random weights): the result checks the whole "
            f"pipeline and its georeferencing, it is not imagery. Output: {request.out}"
        )
        plan(request)  # the renamed output must be free too, before the work
    model = load_model(device=args.device, checkpoint=checkpoint, precision=args.precision,
                       compile=args.compile)
    model.pipeline_check = demo
    if wants_inpainting(request, grid) and not model.inpainting and not args.quiet:
        _say("No inpainting model on this machine: building the scene by joint denoising "
             "with the text-to-image model (--inpaint-model sets one).")
    request.ranker = job_rank_model(args.rank_model, args.device, args.offline or None)
    if request.ranker is None and request.candidates > 1 and not args.quiet:
        _say(f"No rank model (Git-RSCLIP): all {request.candidates} candidates are kept, in "
             "generation order (--rank-model names one).")

    tiles = 1 if windows is None else windows.nx * windows.ny
    joint = windows is not None and not model.inpainting and not args.init_raster
    total = request.steps if windows is None or joint else request.steps * tiles
    if args.init_raster:  # image-to-image runs the steps its strength keeps, per window
        from engine.model.img2img import kept_steps

        total = kept_steps(request.steps, request.strength) * tiles * request.candidates
    elif windows is not None and request.scene_method == "cascade":
        from engine.jobs.cascade import progress_steps
        from engine.jobs.cascade_ladder import plan_ladder

        ladder = plan_ladder(request, grid)
        tiles, total = ladder.windows, progress_steps(ladder, request.steps) * request.candidates
    elif windows is None and request.candidates > 1:  # one progress run per batch
        from engine.jobs.window_batch import batch_size_for

        per_batch = batch_size_for(model.pipeline, max(grid.canvas_width, grid.canvas_height),
                                   request.guidance > 1.0, request.window_batch)
        total *= -(-request.candidates // per_batch)
    else:
        total *= request.candidates
    label = "denoising" if windows is None else f"{tiles} windows"
    with progress_bar(total, label, args.quiet) as callback:
        result = generate(request, model, callback)
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


def cmd_edit_raster(args) -> int:
    """`edit` and `extend`: plan (fails fast), load the inpainting model, run, report."""
    from engine.geo.grid import DEFAULT_MAX_PIXELS
    from engine.jobs.edit import (
        EditRequest,
        ExtendRequest,
        edit_raster,
        extend_raster,
        open_source,
        plan_edit,
        plan_extend,
    )
    from engine.jobs.model_choice import choose_inpainting_checkpoint
    from engine.model.checkpoint import (
        INPAINTING_MODEL,
        MODEL_ENV,
        load_model,
        missing_model_advice,
    )
    from engine.model.precision import check_precision

    check_precision(args.precision, args.device)
    common = dict(
        raster=args.raster, prompt=args.prompt, out=args.out,
        negative_prompt=args.negative_prompt, level=args.level, seed=args.seed,
        steps=args.steps, guidance=args.guidance, scheduler=args.scheduler, bands=args.bands,
        tile=args.tile, overlap=args.overlap, overwrite=args.overwrite,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
    )
    if args.command == "edit":
        request = EditRequest(mask=args.mask, mask_crs=args.mask_crs, mask_layer=args.mask_layer,
                              dilate=args.dilate, feather=args.feather,
                              fill_nodata=args.fill_nodata, **common)
        planner, runner = plan_edit, edit_raster
    else:
        request = ExtendRequest(by=args.by, side=args.side, **common)
        planner, runner = plan_extend, extend_raster
    with open_source(request.raster) as src:
        plan = planner(request, src)  # bad input fails here, before the model loads
    _sweep(args.out, args.quiet)
    if not args.quiet:
        print(f"{plan.grid.width} x {plan.grid.height} px, level {plan.level.level}, "
              f"{plan.windows} window(s) to regenerate", file=sys.stderr)
        for note in plan.notes:
            _say(f"note: {note}")
    _quiet_libraries()
    checkpoint, demo = choose_inpainting_checkpoint(
        args.model, args.offline or None, args.demo_fallback, demo_checkpoint_dir)
    if demo:
        _say(missing_model_advice(args.model or INPAINTING_MODEL).replace(
            f"`--model /path/to/Text2Earth` or the environment variable {MODEL_ENV}",
            "`--model /path/to/Text2Earth-inpainting`"))
        request.out = pipeline_check_path(args.out)
        request.pipeline_check = True
        _say("Running the same job now on the built-in tiny demo inpainting checkpoint: the "
             f"result checks the pipeline and the grid, it is not imagery. Output: {request.out}")
        with open_source(request.raster) as src:
            planner(request, src)
    model = load_model(device=args.device, checkpoint=checkpoint, precision=args.precision,
                       compile=args.compile)
    from engine.quality.rank_model import job_rank_model

    request.ranker = job_rank_model(args.rank_model, args.device, args.offline or None)
    with progress_bar(request.steps * plan.windows, f"{plan.windows} windows",
                      args.quiet) as callback:
        result = runner(request, model, callback)
    print(result.path)
    if not args.quiet:
        print(f"wrote {result.path}: {result.width} x {result.height} px, level "
              f"{result.level}, seed {result.seed}", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from engine.service.network import check_host_and_token

    check_host_and_token(args.host, args.token_file)  # before seconds of importing torch
    from engine.geo.grid import DEFAULT_MAX_PIXELS
    from engine.service.server import serve

    _quiet_libraries()
    args.max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    return serve(args)


def check_prompt_args(args) -> None:
    """The service's cap and characters for every command's prompts: one short line, never
    the text back (a pasted file would fill the terminal)."""
    from engine.jobs.prompt_text import check_prompt_text

    for name, what in (("prompt", "--prompt"), ("negative_prompt", "--negative-prompt")):
        if isinstance(getattr(args, name, None), str):
            check_prompt_text(getattr(args, name), what)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = lambda msg, cat, *a, **k: print(f"warning: {msg}", file=sys.stderr)
    try:
        check_prompt_args(args)
        if getattr(args, "handler", None) is not None:
            return args.handler(args)
        if args.command == "levels":
            return cmd_levels(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "clean":
            return cmd_clean(args)
        if args.command == "resume":
            return cmd_resume(args)
        if args.command in ("edit", "extend"):
            return cmd_edit_raster(args)
        return cmd_generate(args)
    except Text2EarthError as exc:
        message = str(exc).replace("or allow overwriting", "or pass --overwrite")
        print(f"text2earth: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("text2earth: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback for a user, unless asked
        if args.debug:
            raise
        print(
            f"text2earth: internal error: {type(exc).__name__}: {exc} (run with --debug for the "
            "traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
