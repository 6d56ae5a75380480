"""The sampling parameters every Text2Earth algorithm has: seed, steps, guidance, scheduler."""

from __future__ import annotations

from qgis.core import QgsProcessingParameterEnum, QgsProcessingParameterNumber

from ..core.job_spec import SCHEDULERS
from ..qgis_compat import number_type

SEED, STEPS, GUIDANCE, SCHEDULER = "SEED", "STEPS", "GUIDANCE", "SCHEDULER"


def add_sampling_parameters(algorithm, guidance: float) -> None:
    algorithm.addParameter(QgsProcessingParameterNumber(
        SEED, "Seed", number_type("Integer"), defaultValue=42, minValue=0, maxValue=2**31 - 1))
    algorithm.addParameter(QgsProcessingParameterNumber(
        STEPS, "Steps", number_type("Integer"), defaultValue=50, minValue=1, maxValue=1000))
    algorithm.addParameter(QgsProcessingParameterNumber(
        GUIDANCE, "Guidance", number_type("Double"),
        defaultValue=guidance, minValue=0.0, maxValue=50.0))
    algorithm.addParameter(QgsProcessingParameterEnum(
        SCHEDULER, "Scheduler", options=list(SCHEDULERS), defaultValue=0))


def sampling_values(algorithm, parameters, context) -> dict:
    """seed, steps, guidance and scheduler as the job builders take them."""
    return {
        "seed": algorithm.parameterAsInt(parameters, SEED, context),
        "steps": algorithm.parameterAsInt(parameters, STEPS, context),
        "guidance": algorithm.parameterAsDouble(parameters, GUIDANCE, context),
        "scheduler": SCHEDULERS[algorithm.parameterAsEnum(parameters, SCHEDULER, context)],
    }
