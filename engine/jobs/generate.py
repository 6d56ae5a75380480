"""One generation job: request -> output grid -> pipeline -> cropped image -> GeoTIFF."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from itertools import count
from pathlib import Path

import torch

from engine import __version__
from engine.errors import InputError, OutOfMemoryError
from engine.geo.geotiff import (
    check_name_limits,
    check_output_path,
    synthetic_tags,
    write_geotiff,
)
from engine.geo.grid import DEFAULT_MAX_PIXELS, LevelRequest, OutputGrid, build_grid
from engine.geo.regions import GEOJSON_CRS, parse_regions, window_prompts
from engine.geo.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, ScenePlan, canvas_transform, plan_scene
from engine.jobs import candidates
from engine.jobs.init_image import check_init_raster, generate_from_init
from engine.jobs.prompt_text import check_prompt_text
from engine.model.checkpoint import LoadedModel
from engine.model.demo import pipeline_check_path
from engine.model.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, StepCallback, split_level_prefix
from engine.model.provenance import public_model_id
from engine.model.schedulers import DEFAULT_SCHEDULER, check_scheduler
from engine.scenes.cascade import run_cascade
from engine.scenes.job import JOINT, OUTPAINT, SceneJob
from engine.scenes.ladder import CASCADE, check_ladder_options, plan_ladder
from engine.scenes.run import run_scene
from engine.scenes.state import saved_seed

MAX_SEED = 2**32 - 1


@dataclass
class GenerateRequest:
    bbox: tuple[float, float, float, float]
    crs: str
    prompt: str
    out: str | Path
    negative_prompt: str | None = None
    level: int | None = None
    resolution: float | None = None
    scale_denominator: float | None = None
    dpi: float = 96.0
    out_crs: str | None = None
    seed: int | None = None
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    pipeline_check: bool = False  # demo weights: the output is a plumbing test, not imagery
    tile: int = DEFAULT_TILE  # scenes larger than one tile are built window by window
    overlap: int = DEFAULT_OVERLAP
    scene_method: str = "auto"  # auto | outpaint | joint | cascade
    cascade_strengths: tuple[float, ...] | None = None  # per level step, coarse to fine
    cascade_coarse_level: int | None = None  # None: auto (engine.scenes.ladder)
    resume: bool = True  # continue a stopped scene from the windows already made
    regions: list[dict] | None = None  # [{"geometry": GeoJSON polygon, "prompt": "..."}]
    regions_crs: str = GEOJSON_CRS  # the regions' CRS (GeoJSON: lon/lat)
    allowed_dirs: tuple[Path, ...] | None = None  # the service confines writes to these
    window_batch: int | None = None  # scene windows per UNet call; None: fit to free memory
    init_raster: str | Path | None = None  # start from this raster (jobs/init_image.py)
    strength: float = 0.6  # how far from the init raster, 0..1 (only with init_raster)
    extra_tags: dict[str, str] = field(default_factory=dict)
    candidates: int = 1  # N images (N whole scenes), ranked by the rank model: jobs.candidates
    keep_candidates: bool = False  # also write the others as <stem>_c<K>.tif
    rank_model: str | None = None  # which rank model the caller should load (service jobs)
    ranker: object | None = None  # a loaded engine.quality RankModel: outputs get a score


@dataclass
class GenerateResult:
    path: Path
    grid: OutputGrid
    seed: int
    tags: dict[str, str]
    score: float | None = None  # the output's Git-RSCLIP score (None: no rank model)
    candidates: list = field(default_factory=list)  # jobs.candidates.Candidate, best first


def level_request(request: GenerateRequest) -> LevelRequest:
    """The level asked for, explicitly or by the Git-10M prompt prefix '17_GOOGLE_LEVEL_'."""
    prefix_level, _ = split_level_prefix(request.prompt)
    level = request.level
    if prefix_level is not None:
        if request.resolution is not None or request.scale_denominator is not None:
            raise InputError(
                f"the prompt's prefix says level {prefix_level}; do not also give a resolution "
                "or scale"
            )
        if level is not None and level != prefix_level:
            raise InputError(
                f"the prompt's prefix says level {prefix_level} but level {level} was given"
            )
        level = prefix_level
    return LevelRequest(level, request.resolution, request.scale_denominator, request.dpi)


def check_sampling(request) -> None:
    """Scheduler, steps, guidance, seed and windows: shared by every kind of job."""
    check_scheduler(request.scheduler)
    if not isinstance(request.steps, int) or not 1 <= request.steps <= 1000:
        raise InputError(f"steps must be an integer in 1..1000, got {request.steps!r}")
    if not 0 <= request.guidance <= 50:
        raise InputError(f"guidance must be in 0..50, got {request.guidance!r}")
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise InputError(f"seed must be in 0..{MAX_SEED}, got {request.seed}")
    try:
        plan_scene(1, 1, request.tile, request.overlap)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def plan(request: GenerateRequest) -> OutputGrid:
    """Check everything that needs no model, so a bad request fails before any GPU work."""
    if not request.prompt or not split_level_prefix(request.prompt)[1].strip():
        raise InputError("the prompt is empty: describe the scene to generate")
    check_prompt_text(request.prompt)
    if request.negative_prompt:
        check_prompt_text(request.negative_prompt, "the negative prompt")
    check_sampling(request)
    candidates.check_candidates(request.candidates)
    check_output_path(request.out, request.overwrite)
    check_output_names(request)
    if request.scene_method not in ("auto", OUTPAINT, JOINT, CASCADE):
        raise InputError(f"scene method must be auto, {OUTPAINT}, {JOINT} or {CASCADE}")
    check_ladder_options(request)
    grid = build_grid(
        request.bbox, request.crs, level_request(request), request.out_crs, request.max_pixels
    )
    if request.scene_method == CASCADE:  # (checked even where one canvas holds the output)
        plan_ladder(request, grid)  # a ladder that does not fit fails before the model loads
    if request.regions:
        for number, region in enumerate(
                parse_regions(request.regions, request.regions_crs, grid.crs), 1):
            check_prompt_text(region.prompt, f"prompt region {number}'s prompt")
    if request.init_raster is not None:
        if request.regions:
            raise InputError("prompt regions and an init raster cannot be combined: the "
                             "windows made from an init raster all take the one prompt")
        if request.scene_method == CASCADE:
            raise InputError("the cascade scene method builds its own coarse start: it cannot "
                             "also start from an init raster (choose auto, outpaint or joint)")
        check_init_raster(request.init_raster, grid, request.strength)
    return grid


DEMO_NAMES = "on the demo weights its outputs are named *.pipeline-check.tif"


def check_output_names(request: GenerateRequest, demo_possible: bool = False) -> None:
    """Every name the job may write must fit the file system, checked now, not after the
    work: candidates' ``<stem>_c<K>.tif``, and, when the job may fall back to the demo weights
    (``demo_possible``), the ``.pipeline-check`` names it then writes instead."""
    names = [Path(request.out)]
    if request.candidates > 1:
        names.append(candidates.candidate_path(request.out, request.candidates))
    if demo_possible and not request.pipeline_check:
        names += [pipeline_check_path(str(name)) for name in names]
    for name in names[1:]:
        check_written_name(name, DEMO_NAMES if ".pipeline-check" in name.name
                           else "candidates are named *_c<K>.tif")


def check_written_name(name: Path, why: str) -> None:
    """A name the job derives from the output's (``why`` says how) must fit too."""
    try:
        check_name_limits(name)
    except InputError as exc:
        raise InputError(f"{exc}: this job writes {name.name[:20]}...{name.name[-24:]} "
                         f"({why}); choose a shorter output name") from None


def scene_plan(request: GenerateRequest, grid: OutputGrid) -> ScenePlan | None:
    """None when one canvas holds the output, else the windows of an unbounded scene (always
    a scene, possibly of one window, when outpainting or prompt regions are asked for)."""
    small = grid.width <= request.tile and grid.height <= request.tile
    if small and request.scene_method != OUTPAINT and not request.regions:
        return None  # (prompt regions need windows: a small one is a scene of one window)
    return plan_scene(grid.width, grid.height, request.tile, request.overlap)


def scene_method(request: GenerateRequest, model: LoadedModel) -> str:
    """outpaint with an inpainting checkpoint (the authors' method), else joint denoising."""
    if request.scene_method == "auto":
        return OUTPAINT if model.inpainting else JOINT
    if request.scene_method == OUTPAINT and not model.inpainting:
        raise InputError(
            f"outpainting needs an inpainting checkpoint (a 9-channel UNet, such as "
            f"lcybuaa/Text2Earth-inpainting), and {model.checkpoint.model_id} is a "
            "text-to-image one; use --scene-method joint to build the scene with it"
        )
    if request.scene_method in (JOINT, CASCADE) and model.inpainting:
        raise InputError(f"the {request.scene_method} scene method needs the text-to-image "
                         "checkpoint (e.g. lcybuaa/Text2Earth)")
    return request.scene_method


def generate(
    request: GenerateRequest,
    model: LoadedModel,
    callback_on_step_end: StepCallback | None = None,
    grid: OutputGrid | None = None,
    windows: ScenePlan | None = None,
) -> GenerateResult:
    """One job. ``model`` is text-to-image for single images; for a scene it is the
    inpainting model (outpainting) or the text-to-image one (joint denoising). ``grid`` and
    ``windows``: the job's plan, made once (engine.jobs.prepared); without it, planned here."""
    if grid is None:
        grid = plan(request)
        windows = scene_plan(request, grid)
    pipe = model.pipeline
    if windows is None and model.inpainting:
        raise InputError(
            f"{model.checkpoint.model_id} is an inpainting checkpoint (9-channel UNet); "
            "text-to-image needs the text-to-image one, e.g. lcybuaa/Text2Earth"
        )
    seed = request.seed
    if seed is None and windows is not None and request.resume:
        seed = saved_seed(Path(request.out))  # rerunning a stopped scene resumes it
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    pipe.use_scheduler(request.scheduler)
    _, text = split_level_prefix(request.prompt)
    fields = {
        "prompt": text,
        "negative_prompt": request.negative_prompt or "",
        "level": grid.level,
        "level_choice": grid.level_choice.message,
        "ground_resolution_m": f"{grid.ground_resolution:.6g}",
        "seed": seed,
        "steps": request.steps,
        "guidance": request.guidance,
        "scheduler": request.scheduler,
        "model_id": public_model_id(model.checkpoint.model_id),  # never the user's paths
        "model_sha256": model.weights_sha256,
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "precision": model.precision,
        "engine_version": __version__,
    }
    if windows is None:
        fields["canvas"] = f"{grid.canvas_width}x{grid.canvas_height}"
    else:
        method = scene_method(request, model)
        fields.update(scene_method=method, tile=windows.tile, overlap=windows.overlap,
                      windows=f"{windows.nx}x{windows.ny}",
                      canvas=f"{windows.canvas_width}x{windows.canvas_height}")
        ladder = plan_ladder(request, grid, text) if method == CASCADE else None
        fields.update(ladder.describe() if ladder else {})
    if request.regions:
        fields["prompt_regions"] = json.dumps([r.get("prompt") for r in request.regions])
    if model.speed and model.speed.get("memory_savers"):
        fields["memory_savers"] = ",".join(model.speed["memory_savers"])
    if request.pipeline_check:
        fields["pipeline_check"] = "yes: random demo weights, not imagery"
    tags = synthetic_tags(fields) | request.extra_tags
    software = f"Text2Earth engine {__version__}"
    ranked = request.candidates > 1 or request.ranker is not None
    try:
        runs = count()  # candidates' scenes, one after another: one progress count

        if request.init_raster is not None:
            def from_init(seed: int, out: Path) -> Path:
                run_tags = tags | {"TEXT2EARTH_SEED": str(seed)}
                step_end = candidates.numbered_steps(callback_on_step_end, next(runs),
                                                     request.candidates)
                made = generate_from_init(replace(request, out=out), grid, windows, model,
                                          text, seed, run_tags, software, step_end)
                tags.update(run_tags)  # the init's own tags (strength, coverage): the result's
                return made

            if ranked:
                best = candidates.scenes(from_init, request, seed, text, software)
            else:
                path = from_init(seed, Path(request.out))
        elif windows is None and ranked:
            best = candidates.single_images(pipe, request, grid, text, seed, tags, software,
                                            callback_on_step_end)
        elif windows is None:
            output = pipe(
                text,
                level=grid.level,
                negative_prompt=request.negative_prompt,
                height=grid.canvas_height,
                width=grid.canvas_width,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=callback_on_step_end,
            )
            col, row = grid.canvas_offset
            image = output.images[0][row : row + grid.height, col : col + grid.width]
            path = write_geotiff(
                request.out, image, grid.crs, grid.transform, tags, request.overwrite,
                software=software, allowed_dirs=request.allowed_dirs,
            )
        else:
            prompts = None
            if request.regions:
                prompts = window_prompts(
                    windows, canvas_transform(windows, grid.transform),
                    parse_regions(request.regions, request.regions_crs, grid.crs), text)

            def scene(seed: int, out: Path) -> Path:
                job = SceneJob(text, request.negative_prompt, grid.level, request.steps,
                               request.guidance, seed, out, grid.crs, grid.transform,
                               request.overwrite, request.allowed_dirs, prompts,
                               window_batch=request.window_batch, ladder=ladder)
                step_end = candidates.numbered_steps(callback_on_step_end, next(runs),
                                                     request.candidates)
                return run_scene(pipe, job, windows, method, model.weights_sha256,
                                 request.scheduler, tags | {"TEXT2EARTH_SEED": str(seed)},
                                 software, step_end, request.resume,
                                 run_cascade if method == CASCADE else None)

            if ranked:
                best = candidates.scenes(scene, request, seed, text, software)
            else:
                path = scene(seed, Path(request.out))
    except torch.OutOfMemoryError:
        raise OutOfMemoryError(
            f"out of memory on {model.device} for {grid.width} x {grid.height} px: choose a "
            "smaller extent, a coarser level, or a smaller --tile"
        ) from None
    if ranked:
        return GenerateResult(best.path, grid, best.candidates[0].seed, best.tags, best.score,
                              best.candidates)
    return GenerateResult(path, grid, seed, tags)
