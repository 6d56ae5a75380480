"""Restyle an existing raster from its own pixels: image-to-image (SDEdit) with the prompt
and the level, window by window, on the source's grid, bands, data type and nodata.

It is an edit whose windows are noised up to ``strength`` and denoised instead of being
inpainted from scratch: the same plan (engine.jobs.edit.plan: level from the raster's ground
resolution, model scale, windows, size limits), the same window loop (engine.jobs.regenerate:
each window reads what earlier windows made, new pixels blended in with weight exactly 0
outside the region) and the same output (engine.jobs.edit.output: the source's profile, tags,
mask band, COG layout). Without a mask the region is every pixel holding data (nodata and
transparent pixels stay as they are); with one, the grown polygons as in an edit, so pixels
outside the grown mask keep their values bit for bit.

With the inpainting checkpoint each window also sees, as kept context, what its neighbours
already made in the shared strips (so seams stay invisible); with the text-to-image one the
strips are only feathered. Strength 0 (or any strength that keeps no step) runs no window:
the output is the source, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import InputError
from engine.geo.raster_source import describe_source, open_source
from engine.jobs.edit.plan import plan_edit
from engine.jobs.edit.request import EditRequest, RasterPlan, RasterResult
from engine.jobs.edit.run import run_plan
from engine.jobs.regenerate import img2img_window
from engine.model.checkpoint import LoadedModel
from engine.model.img2img import check_strength, kept_steps
from engine.model.pipeline import StepCallback

DEFAULT_STRENGTH = 0.6
NO_VALID = "the mask covers only nodata or transparent pixels"


@dataclass(kw_only=True)
class RestyleRequest(EditRequest):
    """An edit's fields, the mask optional (None: the whole raster), plus the strength."""

    mask: str | dict | None = None
    strength: float = DEFAULT_STRENGTH


def footprint_wkt(src) -> str:
    """The raster's own outline in its CRS (rotated grids too), as a WKT polygon."""
    corners = [src.transform * (c, r) for c, r in ((0, 0), (src.width, 0),
                                                    (src.width, src.height), (0, src.height))]
    ring = ", ".join(f"{x!r} {y!r}" for x, y in [*corners, corners[0]])
    return f"POLYGON (({ring}))"


def plan_restyle(request: RestyleRequest, src) -> RasterPlan:
    """Every check before the model loads; the windows of an edit over the mask (or the
    whole raster). Strength 0 plans no window."""
    request.strength = check_strength(request.strength)
    whole = request.mask is None
    if whole:
        describe_source(src, request.bands)  # no CRS or no grid: say so before the mask does
        request.mask, request.mask_crs, request.mask_layer = footprint_wkt(src), None, None
        request.dilate = request.feather = 0  # every pixel at full weight, to the edges
    request.fill_nodata = False  # nodata holds nothing to restyle: it stays nodata
    try:
        plan = plan_edit(request, src)
    except InputError as exc:
        if str(exc).startswith(NO_VALID):
            where = "the raster holds" if whole else "the mask covers"
            raise InputError(f"{where} only nodata or transparent pixels: nothing to "
                             "restyle") from None
        raise
    finally:
        if whole:
            request.mask = None
    runs = kept_steps(request.steps, request.strength)
    plan.fields.update(
        edit=("restyled (image-to-image) over the whole raster" if whole
              else "restyled (image-to-image) inside polygons"),
        strength=f"{request.strength:g}", strength_steps=f"{runs} of {request.steps}")
    for key in ("fill_nodata",) + (("mask_dilate_px", "mask_feather_px") if whole else ()):
        plan.fields.pop(key, None)
    if runs == 0:
        plan.notes.append(f"strength {request.strength:g} keeps none of the {request.steps} "
                          "steps: the output is the source, unchanged")
        plan.groups, plan.windows = [], 0
        plan.fields["windows"] = 0
    return plan


def restyle_raster(request: RestyleRequest, model: LoadedModel,
                   callback: StepCallback | None = None) -> RasterResult:
    with open_source(request.raster) as src:
        return run_restyle(request, src, plan_restyle(request, src), model, callback)


def run_restyle(request: RestyleRequest, src, plan: RasterPlan, model: LoadedModel,
                callback: StepCallback | None = None) -> RasterResult:
    """The planned windows (``plan``, made from ``src``, still open) through image-to-image."""
    generate = img2img_window(request.prompt.strip(), request.negative_prompt,
                              plan.level.level, request.strength, request.steps,
                              request.guidance, callback, plan.windows, model.inpainting)
    return run_plan(request, src, plan, model, callback, generate)
