"""Which model a job runs on: the one decision shared by the CLI and the service.

Single images use the text-to-image model. A scene is outpainted with the inpainting model
when it is on this machine (``auto``) or was asked for (``outpaint``, which may download it),
and otherwise built by joint denoising with the text-to-image model. Without real weights,
the built-in demo checkpoints stand in only where the user allowed it (``demo_fallback``).
"""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import ModelNotFoundError
from engine.geo.grid import OutputGrid
from engine.jobs.generate import GenerateRequest, scene_plan
from engine.jobs.scene import JOINT, OUTPAINT
from engine.model.checkpoint import INPAINTING_MODEL, MODEL_ENV, Checkpoint, resolve_checkpoint


def wants_inpainting(request: GenerateRequest, grid: OutputGrid) -> bool:
    return scene_plan(request, grid) is not None and request.scene_method != JOINT


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
        explicit = request.scene_method == OUTPAINT
        try:
            # auto never starts a multi-GB download just to pick a method
            return resolve_checkpoint(inpaint_model or INPAINTING_MODEL,
                                      offline if explicit else True), False
        except ModelNotFoundError as exc:
            if explicit:
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
