"""One generation job: request -> output grid -> pipeline -> cropped image -> GeoTIFF."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .checkpoint import LoadedModel
from .errors import InputError, OutOfMemoryError
from .geotiff import check_output_path, synthetic_tags, write_geotiff
from .grid import DEFAULT_MAX_PIXELS, LevelRequest, OutputGrid, build_grid
from .pipeline import (
    DEFAULT_GUIDANCE,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    SCHEDULERS,
    StepCallback,
    split_level_prefix,
)

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
    allowed_dirs: tuple[Path, ...] | None = None  # the service confines writes to these
    extra_tags: dict[str, str] = field(default_factory=dict)


@dataclass
class GenerateResult:
    path: Path
    grid: OutputGrid
    seed: int
    tags: dict[str, str]


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


def plan(request: GenerateRequest) -> OutputGrid:
    """Check everything that needs no model, so a bad request fails before any GPU work."""
    if not request.prompt or not split_level_prefix(request.prompt)[1].strip():
        raise InputError("the prompt is empty: describe the scene to generate")
    if request.scheduler not in SCHEDULERS:
        raise InputError(f"unknown scheduler {request.scheduler!r}: choose {', '.join(SCHEDULERS)}")
    if not isinstance(request.steps, int) or not 1 <= request.steps <= 1000:
        raise InputError(f"steps must be an integer in 1..1000, got {request.steps!r}")
    if not 0 <= request.guidance <= 50:
        raise InputError(f"guidance must be in 0..50, got {request.guidance!r}")
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise InputError(f"seed must be in 0..{MAX_SEED}, got {request.seed}")
    check_output_path(request.out, request.overwrite)
    return build_grid(
        request.bbox, request.crs, level_request(request), request.out_crs, request.max_pixels
    )


def generate(
    request: GenerateRequest,
    model: LoadedModel,
    callback_on_step_end: StepCallback | None = None,
) -> GenerateResult:
    grid = plan(request)
    pipe = model.pipeline
    if model.inpainting:
        raise InputError(
            f"{model.checkpoint.model_id} is an inpainting checkpoint (9-channel UNet); "
            "text-to-image needs the text-to-image one, e.g. lcybuaa/Text2Earth"
        )
    seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
    pipe.use_scheduler(request.scheduler)
    _, text = split_level_prefix(request.prompt)
    try:
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
    except torch.OutOfMemoryError:
        raise OutOfMemoryError(
            f"out of memory on {model.device} for a {grid.canvas_width} x {grid.canvas_height} px "
            "canvas: choose a smaller extent or a coarser level"
        ) from None
    col, row = grid.canvas_offset
    image = output.images[0][row : row + grid.height, col : col + grid.width]

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
        "model_id": model.checkpoint.model_id,
        "model_sha256": model.weights_sha256,
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "canvas": f"{grid.canvas_width}x{grid.canvas_height}",
        "engine_version": __version__,
    }
    if request.pipeline_check:
        fields["pipeline_check"] = "yes: random demo weights, not imagery"
    tags = synthetic_tags(fields) | request.extra_tags
    path = write_geotiff(
        request.out, image, grid.crs, grid.transform, tags, request.overwrite,
        software=f"Text2Earth engine {__version__}", allowed_dirs=request.allowed_dirs,
    )
    return GenerateResult(path, grid, seed, tags)
