"""Edit and extend runs: the planned windows through the inpainting model, into scratch
stores (engine.scenes.store, without a journal: a rerun starts from the source again), then
into the output, the output locked for the whole run (engine.scenes.lock)."""

from __future__ import annotations

from collections.abc import Callable

import rasterio
import torch

from engine.errors import InputError, OutOfMemoryError
from engine.geo.geotiff import (
    COMPOSITE_SOURCE_TYPE,
    check_confined,
    check_output_path,
    checked_writes,
    make_folders,
    remove_folders,
    synthetic_tags,
    temp_stem,
    write_failure,
)
from engine.geo.raster_source import (
    open_source,
)
from engine.jobs.edit.output import has_mask_band, write_output
from engine.jobs.edit.plan import plan_edit, plan_extend, regenerator
from engine.jobs.edit.request import EditRequest, ExtendRequest, RasterJob, RasterPlan, RasterResult
from engine.jobs.edit.source_pixels import fill_store, source_mask
from engine.jobs.output_score import areas_score_tags
from engine.jobs.regenerate import generate_window, store_profile
from engine.model.checkpoint import LoadedModel
from engine.model.pipeline import StepCallback
from engine.model.provenance import public_model_id
from engine.scenes.folder import OutputFolder
from engine.scenes.lock import OutputLock
from engine.scenes.store import WindowStore


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
    stem = temp_stem(out.parent).name  # short and pid-tagged, whatever the output's name
    masked = has_mask_band(src)
    generate = generate or generate_window(
        request.prompt.strip(), request.negative_prompt, plan.level.level, request.steps,
        request.guidance, callback, plan.windows)
    # Iteratively (a path may be 2000 folders deep); removed again if the job fails.
    created = make_folders(out.parent)
    try:
        folder = OutputFolder(out.parent)
    except OSError as exc:
        remove_folders(created)
        raise write_failure(exc, out, out.parent) from exc
    stores: list[WindowStore] = []
    try:
        with OutputLock(out, folder), rasterio.Env(GDAL_CACHEMAX=64):
            areas, done = [], 0
            for k, (area, passes) in enumerate(plan.groups):
                store = WindowStore.fresh(folder, out.with_name(f"{stem}.edit-scratch-{k}.tif"),
                                          store_profile(src.profile, area.width, area.height))
                stores.append(store)
                written = None
                if masked:  # which pixels got new values, for the output's mask
                    written = WindowStore.fresh(
                        folder, out.with_name(f"{stem}.edit-written-{k}.tif"),
                        store_profile(src.profile, area.width, area.height, dtype="uint8",
                                      count=1, nodata=None))
                    stores.append(written)
                with store.writing():
                    fill_store(src, plan, store, area)
                regen = regenerator(
                    plan.grid, plan.scale, plan.mapping, getattr(request, "feather", 0),
                    plan.info, plan.alpha_opaque, store, (area.col_off, area.row_off),
                    (lambda r: source_mask(src, plan, r)) if masked else None, written)
                try:
                    done = regen.run(pipe, passes, generate, done)
                except torch.OutOfMemoryError:
                    raise OutOfMemoryError(
                        f"out of memory on {model.device} for {request.tile} px windows: try "
                        "a smaller --tile"
                    ) from None
                areas.append((area, store, written))
            if request.ranker is not None:  # scored before writing: tags go in once
                tags.update(areas_score_tags(request.ranker, plan, areas, request.prompt))
            folder.check()
            with checked_writes(out):
                path = write_output(request, src, plan, areas, out, tags)
    except BaseException:
        for store in stores:
            store.remove()
        if not folder.swapped():
            remove_folders(created)
        raise
    finally:
        for store in stores:
            store.remove()
        folder.close()
    return RasterResult(path, plan.grid.width, plan.grid.height, plan.info.crs,
                        plan.transform, plan.level.level, request.seed, tags, plan.notes)
