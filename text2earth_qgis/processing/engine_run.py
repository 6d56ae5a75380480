"""Running one job from a Processing algorithm: progress, cancel and errors in Processing's
terms. Shared by every Text2Earth algorithm that talks to the engine's service."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingException

from ..core.contract.files import OutputFolderError, check_output_folder
from ..core.job_spec import is_pipeline_check
from ..core.result_names import job_result_name
from ..core.service.client import EngineError, JobCancelled, ServiceError
from ..core.service.engine_manager import EngineManager
from ..core.service.run_job import progress_percent, run_job


def checked_folder(destination: str) -> str:
    """``destination``, once its folder took a test file; else the user's sentence naming
    the folder and the fix, before anything runs."""
    try:
        check_output_folder(Path(destination).parent)
    except OutputFolderError as exc:
        raise QgsProcessingException(str(exc)) from None
    return destination


def geotiff_destination(destination: str) -> str:
    if not destination.lower().endswith((".tif", ".tiff")):
        raise QgsProcessingException("the output must be a GeoTIFF (.tif)")
    return checked_folder(destination)


def load_written(context, asked: str, written: str, name: str = "") -> str:
    """``written``, and QGIS told to load it on completion in place of ``asked`` (the engine
    names demo-weight results '.pipeline-check.tif'): else QGIS looks for the asked file and
    says the layer 'was not correctly generated'. ``name``: the layer's, as the dock's."""
    if context is None:
        return written
    layers = context.layersToLoadOnCompletion()
    details = layers.pop(asked, None)
    if details is not None:
        if name:
            details.name = name
        layers[written] = details
        context.setLayersToLoadOnCompletion(layers)
    return written


def run_on_engine(manager: EngineManager, job: dict, destination: str, feedback,
                  context=None) -> str:
    """The delivered file's path (the one QGIS then loads, given the ``context``);
    QgsProcessingException for a cancel or an engine error."""

    def on_status(status: dict) -> None:
        feedback.setProgress(progress_percent(status))

    try:
        feedback.pushInfo("connecting to the Text2Earth engine…")
        client = manager.ensure_running()
        result, path = run_job(client, job, destination, overwrite=True,
                               on_status=on_status, is_canceled=feedback.isCanceled,
                               gpu=manager.gpu)
    except JobCancelled:
        raise QgsProcessingException("cancelled: nothing was written") from None
    except ServiceError as exc:  # the service's own reason; its HTTP status is no user's
        raise QgsProcessingException(exc.message) from None
    except EngineError as exc:
        raise QgsProcessingException(str(exc)) from None
    feedback.pushInfo(
        f"level {result.get('level')}, {result.get('width')} x {result.get('height')} px, "
        f"seed {result.get('seed')}: {path}")
    return load_written(context, destination, str(path),
                        job_result_name(job, is_pipeline_check(result)))
