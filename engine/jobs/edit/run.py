"""Edit and extend runs (and restyles, with their own window function): the planned windows
through the model, into one scratch store per area (engine.scenes.store: journaled, so the
same command after a crash or kill resumes after the windows recorded, with the same pixels
as an uninterrupted run), then into the output, the output locked for the whole run
(engine.scenes.run.held_output)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from engine.errors import InputError, OutOfMemoryError
from engine.geo.geotiff import (
    COMPOSITE_SOURCE_TYPE,
    check_confined,
    check_output_path,
    checked_writes,
    synthetic_tags,
)
from engine.geo.raster_source import (
    open_source,
)
from engine.jobs.edit.output import has_mask_band, write_output
from engine.jobs.edit.plan import plan_edit, plan_extend, regenerator
from engine.jobs.edit.request import (
    COPY_ROWS,
    EditRequest,
    ExtendRequest,
    RasterJob,
    RasterPlan,
    RasterResult,
)
from engine.jobs.edit.source_pixels import fill_store, source_mask
from engine.jobs.output_score import areas_score_tags
from engine.jobs.regenerate import generate_window, store_profile
from engine.model.checkpoint import LoadedModel
from engine.model.pipeline import StepCallback
from engine.model.provenance import public_model_id
from engine.scenes.folder import OutputFolder
from engine.scenes.run import held_output, remove_superseded
from engine.scenes.state import file_identity, fingerprint, scratch_names
from engine.scenes.store import STORE_CACHE_BYTES, Bands, WindowStore, cuts_of


def edit_raster(request: EditRequest, model: LoadedModel,
                callback: StepCallback | None = None) -> RasterResult:
    with open_source(request.raster) as src:
        return run_plan(request, src, plan_edit(request, src), model, callback)


def extend_raster(request: ExtendRequest, model: LoadedModel,
                  callback: StepCallback | None = None) -> RasterResult:
    with open_source(request.raster) as src:
        return run_plan(request, src, plan_extend(request, src), model, callback)


def run_plan(request: RasterJob, src, plan: RasterPlan, model: LoadedModel,
             callback: StepCallback | None, generate: Callable | None = None) -> RasterResult:
    """``generate``: Regenerator.run's window function (default: inpainting, which needs the
    inpainting checkpoint; restyle brings its image-to-image one)."""
    if generate is None and not model.inpainting:
        raise InputError(
            f"editing needs the inpainting checkpoint (a 9-channel UNet, such as "
            f"lcybuaa/Text2Earth-inpainting), and {model.checkpoint.model_id} is a "
            "text-to-image one"
        )
    out = check_output_path(request.out, request.overwrite)
    check_confined(out, request.allowed_dirs)
    fields = dict(plan.fields, seed=request.seed,
                  model_id=public_model_id(model.checkpoint.model_id),
                  model_sha256=model.weights_sha256, device=str(model.device),
                  dtype=str(model.dtype).removeprefix("torch."), precision=model.precision)
    if plan.notes:
        fields["notes"] = " | ".join(plan.notes)
    if request.pipeline_check:
        fields["pipeline_check"] = "yes: random demo weights, not imagery"
    tags = synthetic_tags(fields) | request.extra_tags
    tags["TEXT2EARTH_SYNTHETIC"] = "partly: the regenerated areas"
    tags["DIGITAL_SOURCE_TYPE"] = COMPOSITE_SOURCE_TYPE
    pipe = model.pipeline
    pipe.use_scheduler(request.scheduler)
    masked = has_mask_band(src)
    key = job_key(request, src, plan, model, generate)
    generate = generate or generate_window(
        request.prompt.strip(), request.negative_prompt, plan.level.level, request.steps,
        request.guidance, callback, plan.windows)
    with held_output(out) as folder:
        stores: list[WindowStore] = []
        try:
            with rasterio.Env(GDAL_CACHEMAX=STORE_CACHE_BYTES):
                areas, done = [], 0
                for k, (area, passes) in enumerate(plan.groups):
                    regen = regenerator(
                        plan.grid, plan.scale, plan.mapping, getattr(request, "feather", 0),
                        plan.info, plan.alpha_opaque, None, (area.col_off, area.row_off),
                        (lambda r: source_mask(src, plan, r)) if masked else None,
                        src.count + 1 if masked else None)
                    regen.store = store = _area_store(folder, out, src, plan, request, area,
                                                      regen.targets(passes), masked,
                                                      fingerprint([key, k]))
                    stores.append(store)
                    try:
                        done = regen.run(pipe, passes, generate, done)
                    except torch.OutOfMemoryError:
                        raise OutOfMemoryError(
                            f"out of memory on {model.device} for {request.tile} px windows: "
                            "try a smaller --tile") from None
                    pixels = Bands(store, range(1, src.count + 1))
                    areas.append((area, pixels, Bands(store, [src.count + 1]) if masked
                                  else None))
                if request.ranker is not None:  # scored before writing: tags go in once
                    tags.update(areas_score_tags(request.ranker, plan, areas, request.prompt))
                folder.check()
                with checked_writes(out):
                    path = write_output(request, src, plan, areas, out, tags)
        except BaseException as exc:
            for store in stores:
                store.abandon(exc)
            raise
        for store in stores:
            store.remove()
        remove_superseded(folder, out)
    return RasterResult(path, plan.grid.width, plan.grid.height, plan.info.crs,
                        plan.transform, plan.level.level, request.seed, tags, plan.notes)


# Request fields that do not shape the pixels (where they go, how they are tagged or scored).
NOT_PIXELS = {"out", "overwrite", "allowed_dirs", "pipeline_check", "extra_tags", "ranker",
              "max_pixels"}


def job_key(request: RasterJob, src, plan: RasterPlan, model: LoadedModel,
            generate: Callable | None) -> str:
    """Everything that shapes an edit's, extend's or restyle's pixels: a rerun with all of it
    equal resumes, anything else starts afresh."""
    fields = sorted((f.name, repr(getattr(request, f.name)))
                    for f in dataclasses.fields(request) if f.name not in NOT_PIXELS)
    mask = getattr(request, "mask", None)
    passes = [(repr(area), [(repr(p.area), p.seed, p.origin, p.plan.tile, p.plan.overlap,
                             p.plan.width, p.plan.height) for p in group])
              for area, group in plan.groups]
    return fingerprint([
        fields, file_identity(request.raster), src.width, src.height, src.count,
        file_identity(mask) if isinstance(mask, (str, Path)) else None,
        plan.level.level, plan.scale, plan.grid.width, plan.grid.height, tuple(plan.transform),
        plan.offset, passes, model.weights_sha256, model.inpainting, str(model.dtype),
        str(model.device), getattr(generate, "__qualname__", "inpaint"),
    ])


def _area_store(folder: OutputFolder, out: Path, src, plan: RasterPlan, request: RasterJob,
                area, targets, masked: bool, key: str) -> WindowStore:
    """The journaled store of one area: the source's bands (and, for a source with a mask
    band, one recording which pixels were made), filled from the source when made anew."""
    count = src.count + masked

    def fill(store: WindowStore) -> None:
        fill_store(src, plan, Bands(store, range(1, src.count + 1)), area)
        if masked:  # nothing made yet (a new band holds the nodata value, not 0)
            for r in range(0, area.height, COPY_ROWS):
                rows = Window(0, r, area.width, min(COPY_ROWS, area.height - r))
                store.write(np.zeros((rows.height, rows.width), store.profile["dtype"]),
                            count, window=rows)

    meta = {"seed": request.seed, "out": out.name, "pid": os.getpid(),
            "windows": len(targets)}
    return WindowStore.resumable(
        folder, scratch_names(out, key), key,
        store_profile(src.profile, area.width, area.height, count=count), meta,
        cuts_of(targets), fill=fill)
