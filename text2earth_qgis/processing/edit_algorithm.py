"""Processing algorithm "Edit raster": raster + polygons + prompt -> a new GeoTIFF on the
raster's grid, regenerated inside the polygons only."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
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
    build_edit_job,
    raster_file,
    require_crs,
)
from ..core.service.engine_manager import EngineManager
from ..layer_render import needs_render, render_for_edit, render_level
from ..qgis_compat import crs_for_engine, number_type, polygon_source_type
from ..qgis_geometry import source_geojson
from .engine_run import geotiff_destination, run_on_engine
from .generate_algorithm import LEVEL_CHOICES
from .sampling import add_sampling_parameters, sampling_values

AUTO_CHOICE = "auto (from the raster's resolution)"


class EditRasterAlgorithm(QgsProcessingAlgorithm):
    INPUT, MASK, PROMPT, NEGATIVE, LEVEL_PARAM = (
        "INPUT", "MASK", "PROMPT", "NEGATIVE_PROMPT", "LEVEL")
    DILATE, FEATHER, FILL_NODATA, MODEL, OUTPUT = (
        "DILATE", "FEATHER", "FILL_NODATA", "MODEL", "OUTPUT")

    def __init__(self, manager: EngineManager) -> None:
        super().__init__()
        self.manager = manager

    def createInstance(self):  # noqa: N802 - QGIS's name
        return EditRasterAlgorithm(self.manager)

    def name(self) -> str:
        return "editraster"

    def displayName(self) -> str:  # noqa: N802
        return "Edit raster"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Regenerates the pixels of a raster inside polygons from a prompt, with the "
            "Text2Earth inpainting model: the output is a new GeoTIFF with the raster's CRS, "
            "grid, bands, data type and nodata, in which every pixel outside the (grown) "
            "polygons is the source's, unchanged. The new pixels are SYNTHETIC. The source "
            "file is never written. Use 'Selected features only' on the mask to edit a few "
            "polygons of a layer. A layer with no file behind it (WMS, WMTS, XYZ, memory) is "
            "first rendered around the polygons, as it is shown, at the chosen Google level "
            "(auto: an XYZ layer's finest tiles) into a GeoTIFF next to the output, which is "
            "then edited."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster to edit"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.MASK, "Polygons to regenerate", [polygon_source_type()]))
        self.addParameter(QgsProcessingParameterString(self.PROMPT, "Prompt", multiLine=True))
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
        self.addParameter(QgsProcessingParameterBoolean(
            self.FILL_NODATA, "Also generate into nodata / transparent pixels",
            defaultValue=False))
        self.addParameter(QgsProcessingParameterString(
            self.MODEL, "Inpainting model (hub id or folder; empty: the default)",
            optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, "Edited raster (partly synthetic)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        source = self.parameterAsSource(parameters, self.MASK, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.MASK))
        destination = geotiff_destination(
            self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        choice = self.parameterAsEnum(parameters, self.LEVEL_PARAM, context)
        try:
            try:
                path = raster_file(layer.providerType() if layer else None,
                                   layer.source() if layer else None)
            except ValueError:
                if not needs_render(layer):
                    raise
                path = None  # rendered to a GeoTIFF once the polygons are known
            mask_crs = require_crs(crs_for_engine(layer.crs()))
            geometries = source_geojson(source, layer.crs(), context.transformContext())
            level = None if choice == 0 else scale.LEVELS[choice - 1]
            options = EditOptions(
                prompt=self.parameterAsString(parameters, self.PROMPT, context),
                negative_prompt=self.parameterAsString(parameters, self.NEGATIVE, context),
                level=level,
                model=self.parameterAsString(parameters, self.MODEL, context).strip() or None,
                **sampling_values(self, parameters, context),
            )
            job = build_edit_job(
                path or "", geometries, mask_crs, options,
                dilate=self.parameterAsInt(parameters, self.DILATE, context),
                feather=self.parameterAsInt(parameters, self.FEATHER, context),
                fill_nodata=self.parameterAsBoolean(parameters, self.FILL_NODATA, context),
            )
            if path is None:  # every input checked: now the (slower) rendering
                job["raster"] = str(self._render(layer, geometries, level, destination,
                                                 feedback))
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
        return {self.OUTPUT: run_on_engine(self.manager, job, destination, feedback,
                                     context)}

    @staticmethod
    def _render(layer, geometries: list[dict], level: int | None, destination: str,
                feedback) -> Path:
        level = render_level(layer, level)
        feedback.pushInfo(f"rendering {layer.name()} around the polygons at level {level} "
                          "to a GeoTIFF…")
        rendered = render_for_edit(layer, geometries, level, Path(destination).parent)
        feedback.pushInfo(f"rendered: {rendered}")
        return rendered
