"""The dock's tabs' state as values (Generate, Edit raster): what the user set, turned into
the engine's job and back. Stdlib only (no Qt), so tests check the round trip without QGIS.

``GenerateForm.from_job(form.to_job(...)) == form``: "Reuse settings" fills the tab with the
very settings of the run. A job the plugin keeps (history, a layer's properties) carries one
key the engine does not know, ``FORM_KEY`` (how the resolution was chosen, which the engine's
fields cannot tell apart); ``engine_job`` takes it off before the job is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .core.candidates import candidate_fields
from .core.contract.samplers import DEFAULT_SCHEDULER
from .core.contract.tiles import DEFAULT_OVERLAP, DEFAULT_TILE
from .core.edit_spec import (
    DEFAULT_DILATE,
    DEFAULT_FEATHER,
    EDIT_GUIDANCE,
    EditOptions,
    build_edit_job,
    build_extend_job,
)
from .core.init_image import DEFAULT_STRENGTH, init_fields
from .core.job_spec import (
    AUTO,
    LEVEL,
    RESOLUTION,
    Extent,
    Resolution,
    build_job,
)

FORM_KEY = "qgis_form"  # {"resolution_mode": ...}: kept with the job, never sent
DEFAULT_STEPS, DEFAULT_GUIDANCE = 50, 4.0


def engine_job(job: dict) -> dict:
    """The job as the engine takes it: without the plugin's own record."""
    return {k: v for k, v in job.items() if k != FORM_KEY}


@dataclass(frozen=True)
class GenerateForm:
    """Everything the Generate tab sends. ``level`` is set only in LEVEL mode and
    ``metres_per_pixel`` only in the other two (AUTO: one screen pixel on the ground when the
    extent was set); ``strength`` only when the run starts from layers."""

    prompt: str
    bbox: tuple[float, float, float, float]
    crs: str
    mode: str = AUTO
    level: int | None = None
    metres_per_pixel: float | None = 1.0
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    scene_method: str = "auto"
    model: str = ""
    variations: int = 1
    start_from_layers: bool = False
    strength: float | None = None
    extra: dict = field(default_factory=dict, compare=False)  # other fields of a kept job

    def resolution(self) -> Resolution:
        if self.mode == LEVEL:
            return Resolution(mode=LEVEL, level=int(self.level))
        return Resolution(mode=self.mode, metres_per_pixel=float(self.metres_per_pixel))

    def check(self) -> None:
        """The job's own checks (ValueError in a user's words), before layers are drawn."""
        replace(self, start_from_layers=False).to_job()

    def to_job(self, precision: str = "auto", init_raster: str | None = None) -> dict:
        """The job the plugin runs and keeps (``engine_job`` of it is sent); ``init_raster``:
        the layers drawn for this run, when it starts from layers. ValueError for the user."""
        if self.start_from_layers and init_raster is None:
            raise ValueError("the layers to start from are not drawn yet")
        job = build_job(
            Extent(*self.bbox, self.crs), self.prompt, self.resolution(),
            negative_prompt=self.negative_prompt, seed=self.seed, steps=self.steps,
            guidance=self.guidance, scheduler=self.scheduler, model=self.model or None,
            precision=precision, tile=self.tile, overlap=self.overlap,
            scene_method=self.scene_method)
        job.update(candidate_fields(self.variations))
        if self.start_from_layers:
            job.update(init_fields(init_raster, self.strength
                                   if self.strength is not None else DEFAULT_STRENGTH))
        job[FORM_KEY] = {"resolution_mode": self.mode}
        return job

    @classmethod
    def from_job(cls, job: dict) -> GenerateForm:
        """The form that makes ``job``: a kept job's own record, else read from its fields
        (a level is LEVEL, a resolution RESOLUTION)."""
        record = job.get(FORM_KEY) if isinstance(job.get(FORM_KEY), dict) else {}
        if job.get("level") is not None:
            mode, level, metres = LEVEL, int(job["level"]), None
        else:
            metres = float(job["resolution"]) if job.get("resolution") is not None else 1.0
            mode = AUTO if record.get("resolution_mode") == AUTO else RESOLUTION
            level = None
        start = bool(job.get("init_raster"))
        known = {"type", "bbox", "crs", "prompt", "negative_prompt", "seed", "steps",
                 "guidance", "scheduler", "out", "level", "resolution", "model", "precision",
                 "tile", "overlap", "scene_method", "candidates", "keep_candidates",
                 "init_raster", "strength", FORM_KEY}
        return cls(
            prompt=job.get("prompt", ""),
            bbox=tuple(float(v) for v in job.get("bbox") or (0, 0, 0, 0)),
            crs=job.get("crs", ""),
            mode=mode, level=level, metres_per_pixel=metres,
            negative_prompt=job.get("negative_prompt") or "",
            seed=int(job["seed"]) if job.get("seed") is not None else None,
            steps=int(job.get("steps", DEFAULT_STEPS)),
            guidance=float(job.get("guidance", DEFAULT_GUIDANCE)),
            scheduler=job.get("scheduler", DEFAULT_SCHEDULER),
            tile=int(job.get("tile", DEFAULT_TILE)),
            overlap=int(job.get("overlap", DEFAULT_OVERLAP)),
            scene_method=job.get("scene_method", "auto"),
            model=job.get("model") or "",
            variations=int(job.get("candidates", 1)),
            start_from_layers=start,
            strength=float(job.get("strength", DEFAULT_STRENGTH)) if start else None,
            extra={k: v for k, v in job.items() if k not in known},
        )


@dataclass(frozen=True)
class EditForm:
    """Everything the Edit raster tab sends: an edit of the masked area (``side`` None), or
    an extension beyond ``side`` by ``distance_m``. The fields of the other kind are None:
    an edit has no distance, an extension no mask options. ``raster``: the layer's file ("":
    a served layer, drawn to a file by the run). The mask is the run's, as the extent's
    picture is a generation's: ``to_job`` takes it."""

    prompt: str
    raster: str = ""
    side: str | None = None
    distance_m: float | None = None
    negative_prompt: str = ""
    level: int | None = None  # None: from the raster's ground resolution
    seed: int | None = None
    steps: int = DEFAULT_STEPS
    guidance: float = EDIT_GUIDANCE
    scheduler: str = DEFAULT_SCHEDULER
    model: str = ""
    dilate: int | None = DEFAULT_DILATE
    feather: int | None = DEFAULT_FEATHER
    fill_nodata: bool | None = False
    extra: dict = field(default_factory=dict, compare=False)  # other fields of a kept job

    @property
    def kind(self) -> str:
        return "edit" if self.side is None else "extend"

    def options(self) -> EditOptions:
        return EditOptions(
            prompt=self.prompt, negative_prompt=self.negative_prompt, level=self.level,
            seed=self.seed, steps=self.steps, guidance=self.guidance,
            scheduler=self.scheduler, model=self.model or None)

    def check(self) -> None:
        """The checks that need no raster or mask (ValueError in a user's words), before a
        served layer is drawn."""
        self.options().job_fields()

    def to_job(self, geometries: list[dict] | None = None, mask_crs: str = "",
               raster: str | None = None) -> dict:
        """The job sent: an edit of ``geometries`` (GeoJSON in ``mask_crs``, the raster's),
        or the extension; ``raster`` instead of the form's (a served layer drawn for the
        run). ValueError for the user."""
        path = self.raster if raster is None else raster
        if self.side is not None:
            return build_extend_job(path, self.distance_m or 0.0, self.side, self.options())
        return build_edit_job(path, geometries or [], mask_crs, self.options(),
                              dilate=self.dilate, feather=self.feather,
                              fill_nodata=bool(self.fill_nodata))

    @classmethod
    def from_job(cls, job: dict) -> EditForm:
        """The form that makes ``job`` (its mask aside: ``job['mask']`` and ``job['mask_crs']``
        go back to ``to_job``)."""
        extend = job.get("type") == "extend"
        known = {"type", "raster", "prompt", "negative_prompt", "level", "seed", "steps",
                 "guidance", "scheduler", "model", "out", "mask", "mask_crs", "dilate",
                 "feather", "fill_nodata", "by", "side"}
        return cls(
            prompt=job.get("prompt", ""),
            raster=job.get("raster") or "",
            side=job.get("side") if extend else None,
            distance_m=float(job["by"]) if extend and job.get("by") is not None else None,
            negative_prompt=job.get("negative_prompt") or "",
            level=int(job["level"]) if job.get("level") is not None else None,
            seed=int(job["seed"]) if job.get("seed") is not None else None,
            steps=int(job.get("steps", DEFAULT_STEPS)),
            guidance=float(job.get("guidance", EDIT_GUIDANCE)),
            scheduler=job.get("scheduler", DEFAULT_SCHEDULER),
            model=job.get("model") or "",
            dilate=None if extend else int(job.get("dilate", DEFAULT_DILATE)),
            feather=None if extend else int(job.get("feather", DEFAULT_FEATHER)),
            fill_nodata=None if extend else bool(job.get("fill_nodata", False)),
            extra={k: v for k, v in job.items() if k not in known},
        )
