"""Processing algorithm "Generate scene": extent + prompt -> synthetic GeoTIFF."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from ..core.contract import scale
from ..core.job_spec import LEVEL, RESOLUTION, Extent, Resolution, build_job
from ..core.service.engine_manager import EngineManager
from ..qgis_compat import crs_for_engine, number_type
from .engine_run import geotiff_destination, run_on_engine
from .sampling import add_sampling_parameters, sampling_values

LEVEL_CHOICES = [f"{lv} (~{scale.nominal_resolution(lv):g} m/px)" for lv in scale.LEVELS]


class GenerateSceneAlgorithm(QgsProcessingAlgorithm):
    EXTENT, PROMPT, NEGATIVE, LEVEL_PARAM, RESOLUTION_PARAM = (
        "EXTENT", "PROMPT", "NEGATIVE_PROMPT", "LEVEL", "RESOLUTION")
    OUTPUT = "OUTPUT"

    def __init__(self, manager: EngineManager) -> None:
        super().__init__()
        self.manager = manager

    def createInstance(self):  # noqa: N802 - QGIS's name
        return GenerateSceneAlgorithm(self.manager)

    def name(self) -> str:
        return "generatescene"

    def displayName(self) -> str:  # noqa: N802
        return "Generate scene"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Generates SYNTHETIC remote-sensing imagery (Text2Earth AI model) for an extent, "
            "as a GeoTIFF in the extent's CRS at a Google zoom level (10-18; nominal "
            "2^(17-L) m/px) or a ground resolution. Runs on the local Text2Earth engine, "
            "which is started if needed."
        )

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent"))
        self.addParameter(QgsProcessingParameterString(self.PROMPT, "Prompt", multiLine=True))
        self.addParameter(QgsProcessingParameterString(
            self.NEGATIVE, "Negative prompt", optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.LEVEL_PARAM, "Google level (ignored when a resolution is given)",
            options=LEVEL_CHOICES, defaultValue=scale.LEVELS.index(17)))
        self.addParameter(QgsProcessingParameterNumber(
            self.RESOLUTION_PARAM, "Ground resolution in metres per pixel (0 = use the level)",
            number_type("Double"), defaultValue=0.0, minValue=0.0))
        add_sampling_parameters(self, guidance=4.0)
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, "Generated scene (synthetic)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        rect = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        metres = self.parameterAsDouble(parameters, self.RESOLUTION_PARAM, context)
        level = scale.LEVELS[self.parameterAsEnum(parameters, self.LEVEL_PARAM, context)]
        resolution = (Resolution(mode=RESOLUTION, metres_per_pixel=metres) if metres > 0
                      else Resolution(mode=LEVEL, level=level))
        destination = geotiff_destination(
            self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        try:
            job = build_job(
                Extent(rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum(),
                       crs_for_engine(crs)),
                self.parameterAsString(parameters, self.PROMPT, context),
                resolution,
                negative_prompt=self.parameterAsString(parameters, self.NEGATIVE, context),
                **sampling_values(self, parameters, context),
            )
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None

        return {self.OUTPUT: run_on_engine(self.manager, job, destination, feedback,
                                     context)}
