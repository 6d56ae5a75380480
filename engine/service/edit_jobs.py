"""Edit and extend jobs in the service: from a request body to a checked request, and run."""

from __future__ import annotations

import secrets
from pathlib import Path

from engine.errors import GenerationCancelled, InputError
from engine.geo.geotiff import check_output_path
from engine.jobs.edit import (
    EditRequest,
    ExtendRequest,
    RasterResult,
    edit_raster,
    extend_raster,
    open_source,
    plan_edit,
    plan_extend,
)
from engine.jobs.generate import DEMO_NAMES, MAX_SEED, check_written_name
from engine.jobs.model_choice import choose_inpainting_checkpoint
from engine.jobs.restyle import RestyleRequest, plan_restyle, restyle_raster
from engine.model.demo import demo_checkpoint_dir, pipeline_check_path
from engine.service.job_queue import Job, JobCancelledError
from engine.service.outputs import file_identity
from engine.service.runner import ModelManager, ServiceConfig, step_reporter, use_ranker
from engine.service.schemas import EditJob, ExtendJob, RestyleJob


def raster_request(body: EditJob | ExtendJob | RestyleJob, out: Path, config: ServiceConfig):
    """(request, windows): everything that needs no model is checked now (a 422 at once)."""
    if not Path(body.raster).expanduser().is_absolute():
        raise InputError(f"raster must be an absolute path, got {body.raster!r}")
    common = dict(
        raster=body.raster, prompt=body.prompt, out=out, negative_prompt=body.negative_prompt,
        level=body.level, steps=body.steps, guidance=body.guidance, scheduler=body.scheduler,
        # Chosen now: reported at once and kept if the job is retried.
        seed=body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1),
        bands=body.bands, tile=body.tile, overlap=body.overlap, overwrite=body.overwrite,
        max_pixels=config.max_pixels, allowed_dirs=tuple(config.output_dirs),
    )
    if body.type == "edit":
        request = EditRequest(mask=body.mask, mask_crs=body.mask_crs, dilate=body.dilate,
                              feather=body.feather, fill_nodata=body.fill_nodata, **common)
        planner = plan_edit
    elif body.type == "restyle":
        request = RestyleRequest(mask=body.mask, mask_crs=body.mask_crs, dilate=body.dilate,
                                 feather=body.feather, strength=body.strength, **common)
        planner = plan_restyle
    else:
        request = ExtendRequest(by=body.by, side=body.side, **common)
        planner = plan_extend
    with open_source(request.raster) as src:
        plan = planner(request, src)
    if config.demo_fallback:  # the job may run on the demo weights: that name must fit too
        check_written_name(pipeline_check_path(str(out)), DEMO_NAMES)
    return request, plan.windows


def run_raster_job(job: Job, models: ModelManager) -> dict:
    request: EditRequest | ExtendRequest | RestyleRequest = job.request
    checkpoint, demo = choose_inpainting_checkpoint(
        job.model or None, None, models.config.demo_fallback,
        lambda inpainting: str(demo_checkpoint_dir(inpainting)))
    model = models.load(checkpoint, demo, job.precision)
    if model.pipeline_check and not request.pipeline_check:
        request.out = pipeline_check_path(str(request.out))
        request.pipeline_check = True
        check_output_path(request.out, request.overwrite)
        job.out = str(request.out)
    if job.cancel_requested.is_set():
        raise JobCancelledError()
    use_ranker(request, models)  # the service's rank model: a score in the tags
    if isinstance(request, RestyleRequest):  # an EditRequest too: asked first
        run = restyle_raster
    else:
        run = edit_raster if isinstance(request, EditRequest) else extend_raster
    try:
        result = run(request, model, step_reporter(job))
    except GenerationCancelled:
        raise JobCancelledError() from None
    return describe_raster_result(job, result)


def describe_raster_result(job: Job, result: RasterResult) -> dict:
    authority = result.crs.to_authority()
    job.output_identity = file_identity(result.path)  # /file serves this very file only
    return {
        "id": job.id,
        "path": str(result.path),
        "bounds": list(result.bounds),
        "crs_wkt": result.crs.to_wkt(),
        "crs_authid": ":".join(authority) if authority else None,
        "width": result.width,
        "height": result.height,
        "level": result.level,
        "seed": result.seed,
        "notes": result.notes,
        "tags": result.tags,
    }
