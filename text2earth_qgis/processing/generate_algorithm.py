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

from ..core import scale
from ..core.client import EngineError, JobCancelled
from ..core.engine_manager import EngineManager
from ..core.job_spec import LEVEL, RESOLUTION, Extent, Resolution, build_job
from ..core.run_job import progress_percent, run_job
from ..qgis_compat import crs_for_engine, number_type

LEVEL_CHOICES = [f"{lv} (~{scale.nominal_resolution(lv):g} m/px)" for lv in scale.LEVELS]
SCHEDULERS = ["euler", "ddim", "dpm++"]


class GenerateSceneAlgorithm(QgsProcessingAlgorithm):
    EXTENT, PROMPT, NEGATIVE, LEVEL_PARAM, RESOLUTION_PARAM = (
        "EXTENT", "PROMPT", "NEGATIVE_PROMPT", "LEVEL", "RESOLUTION")
    SEED, STEPS, GUIDANCE, SCHEDULER, OUTPUT = "SEED", "STEPS", "GUIDANCE", "SCHEDULER", "OUTPUT"

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
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, "Seed", number_type("Integer"), defaultValue=42,
            minValue=0, maxValue=2**31 - 1))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, "Steps", number_type("Integer"), defaultValue=50,
            minValue=1, maxValue=1000))
        self.addParameter(QgsProcessingParameterNumber(
            self.GUIDANCE, "Guidance", number_type("Double"),
            defaultValue=4.0, minValue=0.0, maxValue=50.0))
        self.addParameter(QgsProcessingParameterEnum(
            self.SCHEDULER, "Scheduler", options=SCHEDULERS, defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, "Generated scene (synthetic)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        rect = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        metres = self.parameterAsDouble(parameters, self.RESOLUTION_PARAM, context)
        level = scale.LEVELS[self.parameterAsEnum(parameters, self.LEVEL_PARAM, context)]
        resolution = (Resolution(mode=RESOLUTION, metres_per_pixel=metres) if metres > 0
                      else Resolution(mode=LEVEL, level=level))
        destination = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not destination.lower().endswith((".tif", ".tiff")):
            raise QgsProcessingException("the output must be a GeoTIFF (.tif)")
        try:
            job = build_job(
                Extent(rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum(),
                       crs_for_engine(crs)),
                self.parameterAsString(parameters, self.PROMPT, context),
                resolution,
                negative_prompt=self.parameterAsString(parameters, self.NEGATIVE, context),
                seed=self.parameterAsInt(parameters, self.SEED, context),
                steps=self.parameterAsInt(parameters, self.STEPS, context),
                guidance=self.parameterAsDouble(parameters, self.GUIDANCE, context),
                scheduler=SCHEDULERS[self.parameterAsEnum(parameters, self.SCHEDULER, context)],
            )
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None

        def on_status(status: dict) -> None:
            feedback.setProgress(progress_percent(status))

        try:
            feedback.pushInfo("connecting to the Text2Earth engine…")
            client = self.manager.ensure_running()
            result, path = run_job(client, job, destination, overwrite=True,
                                   on_status=on_status, is_canceled=feedback.isCanceled)
        except JobCancelled:
            raise QgsProcessingException("cancelled: nothing was written") from None
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(
            f"level {result['level']}, {result['width']} x {result['height']} px, "
            f"seed {result['seed']}: {path}")
        return {self.OUTPUT: str(path)}
