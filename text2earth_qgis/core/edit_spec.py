"""From the dock's "Edit raster" inputs to the engine's edit/extend jobs, and their names.
Stdlib only.

The dock and the Processing algorithm hand over plain values (a file path, GeoJSON
geometries already in one CRS, numbers); every input the engine would refuse is refused here
first, with a sentence the user can act on, before anything is sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .contract import scale
from .contract.files import unused_name  # noqa: F401 - the edit tab's never-colliding names
from .job_spec import DEFAULT_SCHEDULER, slug

SIDES = ("north", "south", "east", "west", "all")
POLYGON_TYPES = ("Polygon", "MultiPolygon")
EDIT_GUIDANCE = 3.5  # the inpainting model's default, as the engine's
DEFAULT_DILATE, DEFAULT_FEATHER = 4, 4  # the engine's defaults
MAX_MASK_PX = 64  # the engine's limit on both
LOCAL_PROVIDER = "gdal"
EXPORT_HINT = ("export it to GeoTIFF first (right click the layer > Export > Save As…) and "
               "edit the copy")


def raster_file(provider: str | None, source: str | None) -> str:
    """The local file behind a raster layer; ValueError when there is none to read."""
    if provider is None:
        raise ValueError("choose the raster layer to edit")
    if provider != LOCAL_PROVIDER:
        raise ValueError(f"the layer is served by the {provider!r} provider, not a local "
                         f"file: {EXPORT_HINT}")
    # GDAL sources may carry options after '|'; sub-datasets and /vsi paths are not files.
    path = (source or "").split("|")[0]
    if not path or not Path(path).is_file():
        raise ValueError(f"the layer's source {path or source!r} is not a local file: "
                         f"{EXPORT_HINT}")
    return str(Path(path).absolute())  # the service wants absolute paths


def require_crs(crs: str) -> str:
    """The raster's CRS as sent to the engine; ValueError when the layer has none."""
    if not crs:
        raise ValueError("the raster layer has no CRS: set it (Layer Properties > Source) "
                         "first")
    return crs


def mask_geometry(geometries: list[dict]) -> dict:
    """One GeoJSON MultiPolygon of every (Multi)Polygon given; ValueError if none or others."""
    polygons: list = []
    for geometry in geometries:
        kind = (geometry or {}).get("type")
        if kind not in POLYGON_TYPES:
            raise ValueError(f"the mask must be polygons, not {kind or 'an empty geometry'}: "
                             "use a polygon layer or draw polygons")
        coordinates = geometry.get("coordinates") or []
        polygons.extend([coordinates] if kind == "Polygon" else coordinates)
    polygons = [p for p in polygons if p and len(p[0]) >= 4]  # a closed ring: 3 corners + 1
    if not polygons:
        raise ValueError("no mask: draw polygons on the map, or select features of a polygon "
                         "layer, around what should be regenerated")
    return {"type": "MultiPolygon", "coordinates": polygons}


@dataclass(frozen=True)
class EditOptions:
    """What edits and extensions share: the prompt and how the model samples."""

    prompt: str
    negative_prompt: str = ""
    level: int | None = None  # None: auto, from the raster's ground resolution
    seed: int | None = None
    steps: int = 50
    guidance: float = EDIT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    model: str | None = None  # the inpainting model; None: the engine's default

    def job_fields(self) -> dict:
        if not self.prompt.strip():
            raise ValueError("type a prompt: what should the new pixels show?")
        fields = {
            "prompt": self.prompt.strip(),
            "negative_prompt": self.negative_prompt.strip() or None,
            "level": None if self.level is None else int(self.level),
            "seed": self.seed,
            "steps": int(self.steps),
            "guidance": float(self.guidance),
            "scheduler": self.scheduler,
        }
        if self.model:
            fields["model"] = self.model
        return fields


def build_edit_job(raster: str, geometries: list[dict], mask_crs: str, options: EditOptions,
                   dilate: int = DEFAULT_DILATE, feather: int = DEFAULT_FEATHER,
                   fill_nodata: bool = False, out: str | None = None) -> dict:
    """The JSON body of an edit job: geometries are GeoJSON in ``mask_crs`` (the raster's)."""
    require_crs(mask_crs)
    if not (0 <= dilate <= MAX_MASK_PX and 0 <= feather <= MAX_MASK_PX):
        raise ValueError(f"grow and feather are pixel counts from 0 to {MAX_MASK_PX}")
    mask = mask_geometry(geometries)
    return {"type": "edit", "raster": raster, **options.job_fields(), "out": out,
            "mask": mask, "mask_crs": mask_crs, "dilate": int(dilate),
            "feather": int(feather), "fill_nodata": bool(fill_nodata)}


def build_extend_job(raster: str, by_m: float, side: str, options: EditOptions,
                     out: str | None = None) -> dict:
    """The JSON body of an extend job: ``by_m`` ground metres beyond ``side``."""
    if side not in SIDES:
        raise ValueError(f"extend to which side? {side!r} is not one of {', '.join(SIDES)}")
    if not by_m > 0:
        raise ValueError(f"the distance to extend by must be more than 0 m (got {by_m:g} m)")
    return {"type": "extend", "raster": raster, **options.job_fields(), "out": out,
            "by": float(by_m), "side": side}


def edit_output_name(raster: str, prompt: str, seed: int | None) -> str:
    """'<source stem>_edited_<prompt>_s<seed>.tif'."""
    return f"{Path(raster).stem}_edited_{slug(prompt)}_s{_seed(seed)}.tif"


def extend_output_name(raster: str, side: str, by_m: float, prompt: str,
                       seed: int | None) -> str:
    """'<source stem>_extended_<side>_<by>m_<prompt>_s<seed>.tif'."""
    return (f"{Path(raster).stem}_extended_{side}_{by_m:g}m_{slug(prompt)}"
            f"_s{_seed(seed)}.tif")


def _seed(seed: int | None) -> str:
    return "random" if seed is None else str(seed)


RESAMPLE_SNAP_LOG2 = 0.1  # within 7 % of the level's pixel the raster is used as it is


def edit_scale_text(pixel_m: tuple[float, float], latitude: float, level: int | None) -> str:
    """What the engine will do with the raster's scale, said before Run: the level (clamped
    or given) and whether windows are resampled, by how much (engine/edit.py decides alike)."""
    px = math.sqrt(pixel_m[0] * pixel_m[1])
    if level is None:
        choice = scale.level_for_resolution(px, latitude)
        level, how = choice.level, "auto" + (", clamped to the model's 10..18" if
                                             choice.clamped else "")
    else:
        how = "given"
    model_m = scale.ground_resolution(level, latitude)
    text = f"level {level} ({how}): the raster's pixels are {px:.3g} m, level {level}'s " \
           f"{model_m:.3g} m"
    sx, sy = pixel_m[0] / model_m, pixel_m[1] / model_m
    if abs(math.log2(sx)) <= RESAMPLE_SNAP_LOG2 and abs(math.log2(sy)) <= RESAMPLE_SNAP_LOG2:
        return text + ": used as they are"
    factor = math.sqrt(sx * sy)
    text += f": resampled {factor:.2f}x for the model and back"
    return text + ("; new pixels look softer than the source's" if factor < 0.7 else "")
