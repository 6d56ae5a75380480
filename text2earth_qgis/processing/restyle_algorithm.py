"""Processing algorithm "Restyle raster": raster + prompt + strength -> a new GeoTIFF on the
raster's grid, regenerated from its own pixels (image-to-image), optionally only inside
polygons."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..core.contract import scale
from ..core.edit_spec import (
    DEFAULT_DILATE,
    DEFAULT_FEATHER,
    EDIT_GUIDANCE,
    MAX_MASK_PX,
    EditOptions,
    mask_geometry,
    raster_file,
    require_crs,
)
from ..core.service.engine_manager import EngineManager
from ..qgis_compat import crs_for_engine, number_type, polygon_source_type
from ..qgis_geometry import source_geojson
from .engine_run import geotiff_destination, run_on_engine
from .generate_algorithm import LEVEL_CHOICES
from .sampling import add_sampling_parameters, sampling_values

AUTO_CHOICE = "auto (from the raster's resolution)"
DEFAULT_STRENGTH = 0.6  # the engine's


def build_restyle_job(raster: str, options: EditOptions, strength: float,
                      geometries: list[dict] | None = None, mask_crs: str | None = None,
                      dilate: int = DEFAULT_DILATE, feather: int = DEFAULT_FEATHER) -> dict:
    """The JSON body of a restyle job; ``geometries`` (GeoJSON in ``mask_crs``) limit it to
    polygons, None restyles the whole raster. ValueError for what the engine would refuse."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"the strength is from 0 (keep the raster) to 1 (ignore it), got "
                         f"{strength:g}")
    job = {"type": "restyle", "raster": raster, **options.job_fields(),
           "strength": float(strength)}
    if geometries is not None:
        if not (0 <= dilate <= MAX_MASK_PX and 0 <= feather <= MAX_MASK_PX):
            raise ValueError(f"grow and feather are pixel counts from 0 to {MAX_MASK_PX}")
        job.update(mask=mask_geometry(geometries), mask_crs=require_crs(mask_crs or ""),
                   dilate=int(dilate), feather=int(feather))
    return job


class RestyleRasterAlgorithm(QgsProcessingAlgorithm):
    INPUT, MASK, PROMPT, NEGATIVE, LEVEL_PARAM = (
        "INPUT", "MASK", "PROMPT", "NEGATIVE_PROMPT", "LEVEL")
    STRENGTH, DILATE, FEATHER, MODEL, OUTPUT = (
        "STRENGTH", "DILATE", "FEATHER", "MODEL", "OUTPUT")

    def __init__(self, manager: EngineManager) -> None:
        super().__init__()
        self.manager = manager

    def createInstance(self):  # noqa: N802 - QGIS's name
        return RestyleRasterAlgorithm(self.manager)

    def name(self) -> str:
        return "restyleraster"

    def displayName(self) -> str:  # noqa: N802
        return "Restyle raster"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Regenerates a raster from its own pixels with a prompt (image-to-image with the "
            "Text2Earth model at the raster's level): noise is added up to the strength, then "
            "removed following the prompt. Strength 0 returns the raster unchanged, 1 ignores "
            "its pixels. The output is a new GeoTIFF with the raster's CRS, grid, bands, data "
            "type and nodata; with polygons, only the (grown) polygons change. The new pixels "
            "are SYNTHETIC. The source file is never written."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster to restyle"))
        self.addParameter(QgsProcessingParameterString(self.PROMPT, "Prompt", multiLine=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.STRENGTH, "Strength (0 keeps the raster, 1 ignores it)",
            number_type("Double"), defaultValue=DEFAULT_STRENGTH, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.MASK, "Only inside these polygons (optional)", [polygon_source_type()],
            optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.NEGATIVE, "Negative prompt", optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.LEVEL_PARAM, "Google level", options=[AUTO_CHOICE, *LEVEL_CHOICES],
            defaultValue=0))
        add_sampling_parameters(self, guidance=EDIT_GUIDANCE)
        self.addParameter(QgsProcessingParameterNumber(
            self.DILATE, "Grow the polygons by (source pixels)", number_type("Integer"),
            defaultValue=DEFAULT_DILATE, minValue=0, maxValue=MAX_MASK_PX))
        self.addParameter(QgsProcessingParameterNumber(
            self.FEATHER, "Feathered edge (source pixels)", number_type("Integer"),
            defaultValue=DEFAULT_FEATHER, minValue=0, maxValue=MAX_MASK_PX))
        self.addParameter(QgsProcessingParameterString(
            self.MODEL, "Model (hub id or folder; empty: the inpainting default)",
            optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, "Restyled raster (synthetic)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        source = self.parameterAsSource(parameters, self.MASK, context)
        destination = geotiff_destination(
            self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        choice = self.parameterAsEnum(parameters, self.LEVEL_PARAM, context)
        try:
            path = raster_file(layer.providerType() if layer else None,
                               layer.source() if layer else None)
            raster_crs = require_crs(crs_for_engine(layer.crs()))
            geometries = None
            if source is not None:
                geometries = source_geojson(source, layer.crs(), context.transformContext())
            options = EditOptions(
                prompt=self.parameterAsString(parameters, self.PROMPT, context),
                negative_prompt=self.parameterAsString(parameters, self.NEGATIVE, context),
                level=None if choice == 0 else scale.LEVELS[choice - 1],
                model=self.parameterAsString(parameters, self.MODEL, context).strip() or None,
                **sampling_values(self, parameters, context),
            )
            job = build_restyle_job(
                path, options, self.parameterAsDouble(parameters, self.STRENGTH, context),
                geometries, raster_crs,
                dilate=self.parameterAsInt(parameters, self.DILATE, context),
                feather=self.parameterAsInt(parameters, self.FEATHER, context),
            )
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
        return {self.OUTPUT: run_on_engine(self.manager, job, destination, feedback,
                                     context)}
