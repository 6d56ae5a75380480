"""A job's set-up, made once: request -> PreparedJob (its plan: the output grid and scene
windows, or a raster plan; which checkpoint; the demo weights' names; the step count), then
run from that plan. The CLI, the service and batch all go through here, so a job is planned
once, whoever asked for it.

Nothing here loads a model: the caller loads ``job.checkpoint`` its own way (the CLI
directly, the service through its warm model manager) and hands the model to ``run``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from engine.geo.geotiff import check_output_path
from engine.geo.grid import OutputGrid
from engine.geo.raster_source import open_source
from engine.geo.tiling import ScenePlan
from engine.jobs import model_choice
from engine.jobs.edit.plan import plan_edit, plan_extend
from engine.jobs.edit.request import EditRequest, ExtendRequest, RasterPlan
from engine.jobs.edit.run import run_plan
from engine.jobs.generate import (
    GenerateRequest,
    check_output_names,
    generate,
    plan,
    scene_plan,
)
from engine.jobs.restyle import RestyleRequest, plan_restyle, run_restyle
from engine.model.checkpoint import Checkpoint, LoadedModel
from engine.model.demo import demo_checkpoint_dir, pipeline_check_path
from engine.model.img2img import kept_steps
from engine.model.pipeline import StepCallback

GENERATE, EDIT, EXTEND, RESTYLE = "generate", "edit", "extend", "restyle"

# The options a generate request takes by the same name from the CLI's arguments and from
# the service's job body (``scale`` is the request's ``scale_denominator``).
GENERATE_OPTIONS = (
    "bbox", "crs", "prompt", "negative_prompt", "level", "resolution", "dpi", "out_crs",
    "seed", "steps", "guidance", "scheduler", "overwrite", "tile", "overlap", "scene_method",
    "cascade_strengths", "cascade_coarse_level", "candidates", "keep_candidates",
    "init_raster", "strength",
)
RASTER_OPTIONS = ("raster", "prompt", "negative_prompt", "level", "seed", "steps", "guidance",
                  "scheduler", "bands", "tile", "overlap", "overwrite")
MASK_OPTIONS = ("mask", "mask_crs", "mask_layer", "dilate", "feather")
KIND_OPTIONS = {EDIT: (*MASK_OPTIONS, "fill_nodata"), EXTEND: ("by", "side"),
                RESTYLE: (*MASK_OPTIONS, "strength")}
RASTER_REQUESTS = {EDIT: EditRequest, EXTEND: ExtendRequest, RESTYLE: RestyleRequest}
RASTER_PLANNERS: dict[str, Callable] = {EDIT: plan_edit, EXTEND: plan_extend,
                                        RESTYLE: plan_restyle}


def generate_request(options: object, **fields) -> GenerateRequest:
    """A generate request from anything holding its options by name (the CLI's parsed
    arguments, the service's job body); ``fields`` are what the caller decides itself."""
    given = {name: getattr(options, name) for name in GENERATE_OPTIONS}
    given.update(bbox=tuple(given["bbox"]), scale_denominator=options.scale)
    return GenerateRequest(**(given | fields))


def raster_request(kind: str, options: object, **fields) -> EditRequest | ExtendRequest:
    """An edit, extend or restyle request from anything holding its options by name; an
    option ``options`` lacks (the service asks no mask layer) keeps the request's default."""
    names = RASTER_OPTIONS + KIND_OPTIONS[kind]
    given = {name: getattr(options, name) for name in names if hasattr(options, name)}
    return RASTER_REQUESTS[kind](**(given | fields))


@dataclass(frozen=True)
class Progress:
    steps: int  # denoising steps of one window run
    runs: int  # window runs, one after another (the service's "tiles")
    total: int  # every step callback of the job: a progress bar's length
    label: str


@dataclass
class PreparedJob:
    """A planned job. A raster job's plan reads its source window by window, so the job
    holds the source open until ``close()`` (or the end of a ``with`` block)."""

    kind: str  # GENERATE, EDIT, EXTEND or RESTYLE
    request: GenerateRequest | EditRequest | ExtendRequest
    grid: OutputGrid | None = None  # generate: the output grid
    windows: ScenePlan | None = None  # generate: a scene's windows (None: one canvas)
    raster_plan: RasterPlan | None = None  # edit, extend, restyle
    source: Any = None  # edit, extend, restyle: the open source the plan reads
    checkpoint: Checkpoint | None = None  # chosen by choose_weights
    demo: bool = False  # the checkpoint is the built-in demo stand-in
    closing: ExitStack = field(default_factory=ExitStack, repr=False)

    def close(self) -> None:
        """Close the source (the plan's counts stay, to report; running needs a new plan)."""
        self.closing.close()
        self.source = None

    def __enter__(self) -> PreparedJob:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def kind_of(request: object) -> str:
    if isinstance(request, GenerateRequest):
        return GENERATE
    if isinstance(request, RestyleRequest):  # an EditRequest too: asked first
        return RESTYLE
    return EDIT if isinstance(request, EditRequest) else EXTEND


def prepare(request: GenerateRequest | EditRequest | ExtendRequest) -> PreparedJob:
    """Every check that needs no model, and the plan: a bad request fails here, before
    minutes of model loading. Open GDAL handles belong to one thread: a raster job prepared
    on one thread and run on another (the service's submit, then its worker) is prepared
    again where it runs."""
    kind = kind_of(request)
    if kind == GENERATE:
        grid = plan(request)
        return PreparedJob(kind, request, grid=grid, windows=scene_plan(request, grid))
    job = PreparedJob(kind, request)
    try:
        job.source = job.closing.enter_context(open_source(request.raster))
        job.raster_plan = RASTER_PLANNERS[kind](request, job.source)
    except BaseException:
        job.close()
        raise
    return job


def demo_dir(inpainting: bool) -> str:
    return str(demo_checkpoint_dir(inpainting))


def choose_weights(job: PreparedJob, model: str | None, inpaint_model: str | None,
                   offline: bool | None, demo_fallback: bool) -> None:
    """Which checkpoint the job loads (engine.jobs.model_choice), and whether it is the
    demo stand-in; raises ModelNotFoundError. Nothing is loaded here."""
    if job.kind == GENERATE:
        job.checkpoint, job.demo = model_choice.choose_checkpoint(
            job.request, job.grid, model, inpaint_model, offline, demo_fallback, demo_dir)
    else:
        job.checkpoint, job.demo = model_choice.choose_inpainting_checkpoint(
            model, offline, demo_fallback, demo_dir)


def use_demo_names(job: PreparedJob) -> None:
    """On the demo weights the job writes ``*.pipeline-check.tif``: renamed now, and the new
    names checked now, before the work."""
    request = job.request
    request.out = pipeline_check_path(str(request.out))
    request.pipeline_check = True
    check_output_path(request.out, request.overwrite)
    if job.kind == GENERATE:
        check_output_names(request)


def progress(job: PreparedJob, inpainting: bool = True,
             model: LoadedModel | None = None) -> Progress:
    """The job's step count. ``inpainting``: a scene is outpainted window by window (else
    joint denoising advances all windows at once); ``model``: single-image candidates are
    made as many per UNet call as its memory allows (without it: one count per run)."""
    request = job.request
    if job.kind != GENERATE:
        windows = job.raster_plan.windows
        steps = (kept_steps(request.steps, request.strength) if job.kind == RESTYLE
                 else request.steps)
        return Progress(steps, windows, steps * windows, f"{windows} windows")
    windows, candidates = job.windows, request.candidates
    tiles = 1 if windows is None else windows.nx * windows.ny
    label = "denoising" if windows is None else f"{tiles} windows"
    if request.init_raster is not None:  # image-to-image runs the steps its strength keeps
        steps = kept_steps(request.steps, request.strength)
        runs = 1 if windows is None else tiles * candidates
        return Progress(steps, runs, steps * tiles * candidates, label)
    if windows is None:  # candidates: one progress run per batch
        batches = 1
        if candidates > 1 and model is not None:
            from engine.scenes.window_batch import batch_size_for

            per_batch = batch_size_for(model.pipeline, max(job.grid.canvas_width,
                                                           job.grid.canvas_height),
                                       request.guidance > 1.0, request.window_batch)
            batches = -(-candidates // per_batch)
        return Progress(request.steps, 1, request.steps * batches, label)
    from engine.scenes.ladder import CASCADE

    if request.scene_method == CASCADE:
        from engine.scenes.cascade import progress_steps
        from engine.scenes.ladder import plan_ladder

        ladder = plan_ladder(request, job.grid)
        return Progress(request.steps, tiles * candidates,
                        progress_steps(ladder, request.steps) * candidates,
                        f"{ladder.windows} windows")
    runs = (tiles if inpainting else 1) * candidates
    return Progress(request.steps, runs, request.steps * runs, label)


def run(job: PreparedJob, model: LoadedModel, callback: StepCallback | None = None):
    """The prepared job on ``model``: a GenerateResult or a RasterResult."""
    if job.kind == GENERATE:
        return generate(job.request, model, callback, grid=job.grid, windows=job.windows)
    if job.source is None:
        raise ValueError("a raster job runs while its source is open (prepare it here)")
    if job.kind == RESTYLE:
        return run_restyle(job.request, job.source, job.raster_plan, model, callback)
    return run_plan(job.request, job.source, job.raster_plan, model, callback)
