"""From a job's request body to its prepared job (engine.jobs.prepared), at submit: all that
needs no model is checked then (a 422 at once), and the plan made then is the one that runs."""

from __future__ import annotations

import secrets
from pathlib import Path

from engine.errors import InputError
from engine.jobs import model_choice, prepared
from engine.jobs.generate import DEMO_NAMES, MAX_SEED, check_output_names, check_written_name
from engine.model.demo import pipeline_check_path
from engine.service.runner import ServiceConfig
from engine.service.schemas import EditJob, ExtendJob, GenerateJob, RestyleJob


def chosen_seed(body) -> int:
    """Chosen now: reported at once, and kept if the job is retried (out of memory)."""
    return body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1)


def raster_job(body: EditJob | ExtendJob | RestyleJob, out: Path,
                   config: ServiceConfig) -> prepared.PreparedJob:
    if not Path(body.raster).expanduser().is_absolute():
        raise InputError(f"raster must be an absolute path, got {body.raster!r}")
    request = prepared.raster_request(
        body.type, body, out=out, seed=chosen_seed(body), max_pixels=config.max_pixels,
        allowed_dirs=tuple(config.output_dirs))
    job = prepared.prepare(request)
    job.close()  # GDAL's handles are per thread: the worker prepares it again where it runs
    if config.demo_fallback:  # the job may run on the demo weights: that name must fit too
        check_written_name(pipeline_check_path(str(out)), DEMO_NAMES)
    return job


def generate_job(body: GenerateJob, out: Path,
                     config: ServiceConfig) -> prepared.PreparedJob:
    request = prepared.generate_request(
        body, out=out, seed=chosen_seed(body), max_pixels=config.max_pixels,
        allowed_dirs=tuple(config.output_dirs),
        regions=[r.model_dump() for r in body.regions] if body.regions else None,
        resume=False,  # service jobs are not resumed: a failed job's scratch goes
        rank_model=body.rank_model)
    if body.init_raster and not Path(body.init_raster).expanduser().is_absolute():
        raise InputError(f"init_raster must be an absolute path, got {body.init_raster!r}")
    job = prepared.prepare(request)  # all that needs no model fails now, not in the queue
    # The names it writes on the demo weights (*.pipeline-check.tif) too.
    check_output_names(request, demo_possible=config.demo_fallback)
    return job


def queued_progress(job: prepared.PreparedJob, inpaint_model: str | None) -> prepared.Progress:
    """The step count a queued job reports. A scene's method is pinned now: auto without the
    inpainting model on this machine is joint denoising (one pass over all windows), so the
    count reported is the one run."""
    request, inpainting = job.request, True
    scene = job.kind == prepared.GENERATE and job.windows is not None
    if scene and request.init_raster is None and request.scene_method != model_choice.CASCADE:
        method = model_choice.planned_scene_method(request, job.grid, inpaint_model)
        inpainting = method != model_choice.JOINT
        if not inpainting:
            request.scene_method = method
    return prepared.progress(job, inpainting)
