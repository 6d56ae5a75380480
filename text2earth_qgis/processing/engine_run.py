"""Running one job from a Processing algorithm: progress, cancel and errors in Processing's
terms. Shared by every Text2Earth algorithm."""

from __future__ import annotations

from qgis.core import QgsProcessingException

from ..core.client import EngineError, JobCancelled, ServiceError
from ..core.engine_manager import EngineManager
from ..core.run_job import progress_percent, run_job


def geotiff_destination(destination: str) -> str:
    if not destination.lower().endswith((".tif", ".tiff")):
        raise QgsProcessingException("the output must be a GeoTIFF (.tif)")
    return destination


def run_on_engine(manager: EngineManager, job: dict, destination: str, feedback) -> str:
    """The delivered file's path; QgsProcessingException for a cancel or an engine error."""

    def on_status(status: dict) -> None:
        feedback.setProgress(progress_percent(status))

    try:
        feedback.pushInfo("connecting to the Text2Earth engine…")
        client = manager.ensure_running()
        result, path = run_job(client, job, destination, overwrite=True,
                               on_status=on_status, is_canceled=feedback.isCanceled)
    except JobCancelled:
        raise QgsProcessingException("cancelled: nothing was written") from None
    except ServiceError as exc:  # the service's own reason; its HTTP status is no user's
        raise QgsProcessingException(exc.message) from None
    except EngineError as exc:
        raise QgsProcessingException(str(exc)) from None
    feedback.pushInfo(
        f"level {result['level']}, {result['width']} x {result['height']} px, "
        f"seed {result['seed']}: {path}")
    return str(path)
