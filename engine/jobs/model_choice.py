"""Which model a job runs on: the one decision shared by the CLI and the service.

Single images use the text-to-image model. A scene is outpainted with the inpainting model
when it is on this machine (``auto``) or was asked for (``outpaint``, which may download it),
and otherwise built by joint denoising with the text-to-image model (cascades always use
the text-to-image model: their image-to-image runs on it). Without real weights,
the built-in demo checkpoints stand in only where the user allowed it (``demo_fallback``).
"""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import ModelNotFoundError
from engine.geo.grid import OutputGrid
from engine.jobs.generate import GenerateRequest, scene_plan
from engine.model.checkpoint import INPAINTING_MODEL, MODEL_ENV, Checkpoint, resolve_checkpoint
from engine.scenes.job import JOINT, OUTPAINT
from engine.scenes.ladder import CASCADE


def wants_inpainting(request: GenerateRequest, grid: OutputGrid) -> bool:
    return scene_plan(request, grid) is not None and request.scene_method not in (JOINT, CASCADE)


def local_inpainting(inpaint_model: str | None) -> Checkpoint | None:
    """The inpainting checkpoint if it is on this machine (auto never starts a multi-GB
    download just to pick a method), else None."""
    try:
        return resolve_checkpoint(inpaint_model or INPAINTING_MODEL, True)
    except ModelNotFoundError:
        return None


def planned_scene_method(request: GenerateRequest, grid: OutputGrid,
                         inpaint_model: str | None) -> str | None:
    """The method a scene will be built with (None: one canvas, no scene), decided the way
    choose_checkpoint decides, so a job can report its real window count before it runs:
    outpainting goes window by window, joint denoising advances all windows at once."""
    if scene_plan(request, grid) is None:
        return None
    if request.scene_method == "auto":
        return OUTPAINT if local_inpainting(inpaint_model) is not None else JOINT
    return request.scene_method


def choose_checkpoint(
    request: GenerateRequest,
    grid: OutputGrid,
    model: str | None,
    inpaint_model: str | None,
    offline: bool | None,
    demo_fallback: bool,
    demo_dir: Callable[[bool], str],
) -> tuple[Checkpoint, bool]:
    """(checkpoint to load, whether it is the demo stand-in); raises ModelNotFoundError.

    Nothing is loaded or unloaded here, so a miss costs no warm model.
    """
    if wants_inpainting(request, grid):
        if request.scene_method != OUTPAINT:  # auto: outpaint only with the model at hand
            local = local_inpainting(inpaint_model)
            if local is not None:
                return local, False
        else:
            try:
                return resolve_checkpoint(inpaint_model or INPAINTING_MODEL, offline), False
            except ModelNotFoundError as exc:
                if not demo_fallback:
                    raise ModelNotFoundError(
                        f"outpainting needs the inpainting model: {exc}".replace(
                            "--model /path/to/Text2Earth", "--inpaint-model /path/to/it"
                        )
                    ) from None
                return resolve_checkpoint(str(demo_dir(True))), True
    try:
        return resolve_checkpoint(model, offline), False
    except ModelNotFoundError:
        if not demo_fallback:
            raise
        return resolve_checkpoint(str(demo_dir(False))), True


def choose_inpainting_checkpoint(
    model: str | None,
    offline: bool | None,
    demo_fallback: bool,
    demo_dir: Callable[[bool], str],
) -> tuple[Checkpoint, bool]:
    """The inpainting checkpoint for editing or extending a raster (no other model can)."""
    try:
        return resolve_checkpoint(model or INPAINTING_MODEL, offline), False
    except ModelNotFoundError as exc:
        if not demo_fallback:
            raise ModelNotFoundError(
                f"editing rasters needs the inpainting model: {exc}".replace(
                    f"`--model /path/to/Text2Earth` or the environment variable {MODEL_ENV}",
                    "`--model /path/to/Text2Earth-inpainting`")
            ) from None
        return resolve_checkpoint(str(demo_dir(True))), True
