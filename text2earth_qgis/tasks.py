"""QgsTasks around the blocking client calls: nothing waits on the UI thread."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .core.failure_advice import job_message, older_engine_advice
from .core.service.client import EngineError, JobCancelled, ServiceError, ServiceNotRunning
from .core.service.engine_manager import EngineManager
from .core.service.run_job import progress_percent, run_candidates, run_job
from .forms import engine_job


def task_flags():
    """Cancellable, and silent where QGIS knows the flag (3.26+): the dock says how a run
    ended; a desktop notification would only repeat it."""
    flags = QgsTask.Flag.CanCancel
    silent = getattr(QgsTask.Flag, "Silent", None)
    return flags | silent if silent is not None else flags


class EngineTask(QgsTask):
    """Find or start the engine and check its health."""

    done = pyqtSignal(bool, str)

    def __init__(self, manager: EngineManager) -> None:
        super().__init__("Text2Earth: connecting to the engine", task_flags())
        self.manager = manager
        self.error = ""
        self.since = manager.stops  # a stop after this (QGIS closing) means: start nothing

    def run(self) -> bool:
        try:
            self.manager.ensure_running(since=self.since)
            return True
        except EngineError as exc:
            self.error = str(exc)
            return False

    def finished(self, ok: bool) -> None:
        self.done.emit(ok, self.error)


class GenerateTask(QgsTask):
    """Send one job to the engine, report its steps and previews, deliver the GeoTIFF."""

    progressed = pyqtSignal(dict)
    previewed = pyqtSignal(bytes)
    completed = pyqtSignal(bool)

    def __init__(self, manager: EngineManager, job: dict, destination: str,
                 paths_for=None) -> None:
        """``paths_for(candidates, pipeline_check)``: a job of N variations, named by it."""
        super().__init__(f"Text2Earth: {job.get('prompt', '')[:40]}", task_flags())
        self.manager = manager
        self.job = job
        self.destination = destination
        self.paths_for = paths_for
        self.result: dict | None = None
        self.path: str | None = None
        self.delivered: list = []  # (candidate, path) best first, for N variations
        self.problems: list[str] = []
        self.error = ""
        self.was_cancelled = False

    def _status(self, status: dict) -> None:
        self.setProgress(progress_percent(status))
        self.progressed.emit(status)

    def run(self) -> bool:
        try:
            client = self.manager.ensure_running()
        except EngineError as exc:  # the manager's own message, its advice already in it
            self.error = str(exc)
            return False
        try:
            if self.paths_for is not None:
                return self._run_candidates(client)
            self.result, path = run_job(
                client, engine_job(self.job), self.destination,
                on_status=self._status, is_canceled=self.isCanceled,
                on_preview=self.previewed.emit, gpu=self.manager.gpu,
            )
            self.path = str(path)
            return True
        except JobCancelled:
            # Ends as terminated, not "Task complete"; finished() logs it as cancelled.
            self.was_cancelled = True
            return False
        except ServiceNotRunning as exc:  # mid-job: crashed, hung, or a remote one gone
            self.error = self.manager.lost_contact(str(exc))
            return False
        except ServiceError as exc:  # the service's own reason; the HTTP status is no user's
            self.error = older_engine_advice(exc.errors) or job_message(
                exc.message, gpu=self.manager.gpu)
            return False
        except EngineError as exc:
            self.error = job_message(str(exc), gpu=self.manager.gpu)
            return False

    def _run_candidates(self, client) -> bool:
        self.result, self.delivered, self.problems = run_candidates(
            client, engine_job(self.job), self.paths_for, on_status=self._status,
            is_canceled=self.isCanceled, on_preview=self.previewed.emit,
            folder=Path(self.destination).parent, gpu=self.manager.gpu)
        if not self.delivered:
            self.error = "the engine delivered no variation: " + "; ".join(self.problems)
            return False
        self.path = str(self.delivered[0][1])
        return True

    def finished(self, ok: bool) -> None:
        if not ok and self.isCanceled():
            self.was_cancelled = True
        if self.was_cancelled:
            QgsMessageLog.logMessage(f"{self.description()}: cancelled, nothing was written",
                                     "Text2Earth", Qgis.MessageLevel.Info)
        self.completed.emit(ok and not self.was_cancelled)
