"""Request bodies of the job API: the CLI's options as JSON fields, validated by pydantic."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from engine.geo.tiling import DEFAULT_OVERLAP, DEFAULT_TILE
from engine.jobs.generate import MAX_SEED
from engine.jobs.prompt_text import MAX_PROMPT_CHARS, check_prompt_text
from engine.model.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES
from text2earth_qgis.core.contract.scale import DEFAULT_DPI, MAX_LEVEL, MIN_LEVEL, parse_scale

SchedulerName = Literal[SCHEDULER_NAMES]  # one enum in the OpenAPI schema, from the one list
# Text without control characters (a NUL would cut the TIFF tag it is written to): the
# rule of every way in, engine.jobs.prompt_text.
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS,
                              description="no control characters but tab and line breaks"),
                   AfterValidator(check_prompt_text)]
NegativePrompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS),
                           AfterValidator(lambda text: check_prompt_text(text,
                                                                         "the negative prompt"))]


class FieldError(BaseModel):
    field: str = Field(description="the body field, dotted ('bbox', 'regions.0.prompt')")
    message: str


class ErrorAnswer(BaseModel):
    """Every error answer (docs/service-api.md, Errors)."""

    detail: str = Field(description="one sentence for people; may be reworded at any time")
    error_kind: str = Field(description="a stable key for programs: bad_input, not_found, ...")
    errors: list[FieldError] | None = Field(None, description="422 from field validation")


ERROR_ANSWERS = {status: {"model": ErrorAnswer, "description": text} for status, text in {
    400: "not valid HTTP/1.1 (no or two Host headers, a bad Content-Length)",
    401: "missing or wrong token (a service started with --token-file)",
    403: "a Host that is not a loopback name",
    404: "no such job, path, preview or kept candidate",
    405: "the path does not serve that method (Allow lists those it does)",
    413: "a request body over 1 MB",
    415: "a request body that is not application/json",
    422: "a request that cannot be honoured (extent, CRS, level, path, model, ...)",
    500: "an unexpected error: a bug to report",
}.items()}


class PromptRegionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    geometry: dict = Field(description="GeoJSON Polygon or MultiPolygon, lon/lat (EPSG:4326)")
    prompt: Prompt


class GenerateJob(BaseModel):
    # Strict: "17" is not a level, true is not a step count, "yes" is not an overwrite.
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["generate"] = "generate"
    bbox: list[float] = Field(min_length=4, max_length=4,
                              description="xmin, ymin, xmax, ymax in `crs`")
    crs: str = Field(min_length=1, max_length=20000, description="EPSG code, WKT or PROJ")
    prompt: Prompt
    negative_prompt: NegativePrompt | None = None
    level: int | None = Field(None, ge=MIN_LEVEL, le=MAX_LEVEL)
    resolution: float | None = Field(None, gt=0, description="ground metres per pixel")
    scale: float | str | None = Field(None, description="N of a 1:N map scale, or '1:N'")
    dpi: float = Field(DEFAULT_DPI, gt=0, le=10000)
    out_crs: str | None = Field(None, max_length=20000)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    steps: int = Field(50, ge=1, le=1000)
    guidance: float = Field(4.0, ge=0, le=50)
    scheduler: SchedulerName = DEFAULT_SCHEDULER
    out: str | None = Field(None, max_length=4096,
                            description="file name, or a path inside an output folder")
    overwrite: bool = False
    model: str | None = Field(None, max_length=4096,
                              description="hub id or local folder; default: the service's")
    tile: int = Field(DEFAULT_TILE, ge=64, le=2048, description="scene window size in px")
    overlap: int = Field(DEFAULT_OVERLAP, ge=0, le=1024, description="scene window overlap in px")
    scene_method: Literal["auto", "outpaint", "joint", "cascade"] = "auto"
    cascade_strengths: list[Annotated[float, Field(ge=0, le=1)]] | None = Field(
        None, max_length=MAX_LEVEL - MIN_LEVEL,
        description="cascade: image-to-image strength per level step, coarse to fine")
    cascade_coarse_level: int | None = Field(None, ge=MIN_LEVEL, le=MAX_LEVEL,
                                             description="cascade: the level to start from")
    inpaint_model: str | None = Field(None, max_length=4096,
                                      description="inpainting model for outpainted scenes")
    precision: Literal["auto", "fp32", "bf16", "fp16"] | None = Field(
        None, description="arithmetic; default: the service's --precision")
    regions: list[PromptRegionBody] | None = Field(
        None, max_length=1000, description="prompt regions (GeoJSON polygons in lon/lat)")
    candidates: int = Field(1, ge=1, le=8, description="N images (scenes: N whole scenes), "
                            "ranked by Git-RSCLIP; the best is the output")
    keep_candidates: bool = Field(False, description="also write the others as <stem>_c<K>.tif "
                                  "(implied without a rank model when candidates > 1)")
    rank_model: str | None = Field(None, max_length=4096, description=(
        "Git-RSCLIP, hub id or local folder, or 'none'; default: the service's "
        "(serve --rank-model, $TEXT2EARTH_RANK_MODEL, or lcybuaa/Git-RSCLIP when on this "
        "machine)"))
    init_raster: str | None = Field(
        None, min_length=1, max_length=4096,
        description="absolute path of a raster in any CRS to start from (warped onto the "
                    "output grid, then image-to-image)")
    strength: float = Field(0.6, ge=0, le=1, description="with init_raster: how far from it, "
                            "0 keeps it, 1 ignores it")

    @field_validator("scale")
    @classmethod
    def _scale(cls, value):
        if value is None:
            return None
        try:
            return parse_scale(str(value))
        except ValueError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _one_resolution(self):
        given = [n for n in ("level", "resolution", "scale") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of level, resolution or scale (got {given})")
        return self


class RasterJobBody(BaseModel):
    """What edit and extend jobs share: the source raster, the prompt, the sampling."""

    model_config = ConfigDict(extra="forbid", strict=True)

    raster: str = Field(min_length=1, max_length=4096,
                        description="absolute path of the source raster (never modified)")
    prompt: Prompt
    negative_prompt: NegativePrompt | None = None
    level: int | None = Field(None, ge=MIN_LEVEL, le=MAX_LEVEL,
                              description="default: from the raster's ground resolution")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    steps: int = Field(50, ge=1, le=1000)
    guidance: float = Field(3.5, ge=0, le=50)
    scheduler: SchedulerName = DEFAULT_SCHEDULER
    bands: list[int] | None = Field(None, min_length=1, max_length=3,
                                    description="1-based R, G, B bands (or one gray band)")
    out: str | None = Field(None, max_length=4096)
    overwrite: bool = False
    model: str | None = Field(None, max_length=4096,
                              description="inpainting model; default lcybuaa/Text2Earth-inpainting")
    tile: int = Field(DEFAULT_TILE, ge=64, le=2048)
    overlap: int = Field(DEFAULT_OVERLAP, ge=0, le=1024)
    precision: Literal["auto", "fp32", "bf16", "fp16"] | None = Field(
        None, description="arithmetic; default: the service's --precision")


class EditJob(RasterJobBody):
    type: Literal["edit"]
    mask: dict | str = Field(description="GeoJSON geometry/Feature/FeatureCollection of "
                                         "polygons, or WKT")
    mask_crs: str | None = Field(None, max_length=20000,
                                 description="default: GeoJSON lon/lat, WKT the raster's CRS")
    dilate: int = Field(4, ge=0, le=64, description="grow the mask by N raster pixels")
    feather: int = Field(4, ge=0, le=64, description="soft edge in raster pixels")
    fill_nodata: bool = False


class RestyleJob(RasterJobBody):
    type: Literal["restyle"]
    strength: float = Field(0.6, ge=0, le=1, description="how far from the source: 0 keeps "
                            "it exactly, 1 ignores it")
    mask: dict | str | None = Field(None, description="optional: restyle only inside these "
                                    "polygons (as edit); default: the whole raster")
    mask_crs: str | None = Field(None, max_length=20000,
                                 description="default: GeoJSON lon/lat, WKT the raster's CRS")
    dilate: int = Field(4, ge=0, le=64, description="grow the mask by N raster pixels")
    feather: int = Field(4, ge=0, le=64, description="soft edge in raster pixels")


class ExtendJob(RasterJobBody):
    type: Literal["extend"]
    by: float | str = Field(description="metres on the ground, or '500m', '1.5km', '200px'")
    side: Literal["north", "south", "east", "west", "all"]


def _job_type(body) -> str | None:
    """The tag; an unknown one is refused naming the known ones."""
    if isinstance(body, dict):
        kind = body.get("type", "generate")
    else:  # a validated model, or something that is not a JSON object at all
        kind = getattr(body, "type", "generate")
    return kind if isinstance(kind, str) else None


# A body without "type" is a generate job, as before edit and extend existed.
AnyJob = Annotated[
    Annotated[GenerateJob, Tag("generate")] | Annotated[EditJob, Tag("edit")]
    | Annotated[ExtendJob, Tag("extend")] | Annotated[RestyleJob, Tag("restyle")],
    Discriminator(_job_type),
]
