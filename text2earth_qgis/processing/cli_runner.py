"""Running the engine's CLI (``python -m engine.cli ...`` in the engine's own venv) from a
Processing algorithm: no shell, no console window on Windows, progress and cancel through
Processing's feedback, the CLI's last stderr line as the error. The plugin never imports torch;
the algorithms that need more than the service offers (a batch, Git-RSCLIP labels) run this."""

from __future__ import annotations

import subprocess  # nosec B404 - the engine's own CLI, an argument list, no shell
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsProcessingException

from ..core.contract.child_process import NO_WINDOW, clean_env
from ..core.service.engine_manager import NO_ENGINE_MESSAGE, EngineManager, find_engine_python

POLL_S = 0.2
ERROR_PREFIX = "text2earth: error: "


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str


def engine_python(manager: EngineManager) -> str:
    """The engine venv's interpreter; QgsProcessingException saying how to set one up."""
    python = find_engine_python(manager.settings.python)
    if python is None:
        raise QgsProcessingException(NO_ENGINE_MESSAGE)
    return python


def engine_env(manager: EngineManager) -> dict:
    """The CLI's environment: QGIS's Python paths left out (the engine has its own venv), the
    model cache the plugin's settings name."""
    cache = manager.settings.model_cache
    return clean_env(extra={"HF_HUB_CACHE": cache} if cache else None)


def last_error_line(stderr: str, returncode: int) -> str:
    """The CLI's one-line reason (its last non-empty stderr line), for the user."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return f"the engine stopped (exit code {returncode}) without saying why"
    return lines[-1].strip().removeprefix(ERROR_PREFIX)


def run_engine_cli(manager: EngineManager, args: list[str], feedback,
                   progress: Callable[[], float] | None = None,
                   cancelled: str = "cancelled: nothing was written",
                   ok_codes: tuple[int, ...] = (0,)) -> CliRun:
    """``python -m engine.cli *args`` to its end; ``progress()`` (0..100) is polled while it
    runs. QgsProcessingException with ``cancelled`` on a cancel (the CLI is stopped; its
    checked writes leave nothing partial), with its last stderr line on an exit code outside
    ``ok_codes``."""
    command = [engine_python(manager), "-m", "engine.cli", *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            process = subprocess.Popen(  # noqa: S603 # nosec B603 - list argv, no shell
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=engine_env(manager), creationflags=NO_WINDOW,
                cwd=Path(command[0]).parent)  # not QGIS's folder: its engine/ would shadow
        except OSError as exc:
            raise QgsProcessingException(
                f"cannot run the engine's Python {command[0]}: {exc}") from None
        while process.poll() is None:
            if feedback.isCanceled():
                _stop(process)
                raise QgsProcessingException(cancelled)
            if progress is not None:
                feedback.setProgress(min(99.0, progress()))
            time.sleep(POLL_S)
        out.seek(0)
        err.seek(0)
        run = CliRun(process.returncode, out.read().decode("utf-8", "replace"),
                     err.read().decode("utf-8", "replace"))
    if run.returncode not in ok_codes:
        raise QgsProcessingException(last_error_line(run.stderr, run.returncode))
    return run


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
