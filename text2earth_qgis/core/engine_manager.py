"""Find, start, reach and stop the engine service from the plugin. Stdlib only, no Qt.

The plugin never imports torch: it starts `python -m engine.cli serve` with the engine's own
Python (a path in the settings, or the development checkout's .venv), or connects to an engine
URL the user gives. Every call here may block; the plugin runs them inside QgsTasks.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .client import EngineClient, EngineError, LocalService, read_token, start_local_service

PYTHON_ENV = "TEXT2EARTH_ENGINE_PYTHON"
NOT_FOUND, STOPPED, STARTING, CONNECTED, FAILED = (
    "not found", "stopped", "starting", "connected", "failed"
)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def find_engine_python(configured: str | None = None) -> str | None:
    """The settings' path, else $TEXT2EARTH_ENGINE_PYTHON, else a dev checkout's .venv."""
    candidates = [configured, os.environ.get(PYTHON_ENV)]
    checkout = Path(__file__).resolve().parents[2]
    candidates.append(str(venv_python(checkout / ".venv")))
    for candidate in candidates:
        if candidate and Path(candidate).expanduser().is_file():
            return str(Path(candidate).expanduser())
    return None


@dataclass
class EngineSettings:
    python: str | None = None  # engine venv's interpreter; None = find one
    url: str | None = None  # connect to this engine instead of starting one
    token_file: str | None = None
    model: str | None = None
    device: str | None = None
    staging_dir: str = ""  # where a started service writes; results are moved from there
    demo_fallback: bool = True  # without real weights, serve the tiny demo checkpoint
    start_timeout: float = 180.0


@dataclass
class EngineManager:
    settings: EngineSettings
    state: str = STOPPED
    message: str = ""
    device_name: str = ""
    _service: LocalService | None = None
    _client: EngineClient | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop_requested: bool = False

    @property
    def client(self) -> EngineClient | None:
        return self._client

    def ensure_running(self) -> EngineClient:
        """A client of a healthy engine, starting one if needed; raises EngineError."""
        with self._lock:
            if self._client is not None:
                try:
                    self._note_health(self._client.health())
                    return self._client
                except EngineError:
                    self._client = None
                    if self._service is not None:
                        self._service.stop()
                        self._service = None
            if self.settings.url:
                client = EngineClient(self.settings.url, read_token(self.settings.token_file))
                self._note_health(client.health())
                self._client = client
                return client
            python = find_engine_python(self.settings.python)
            if python is None:
                self.state = NOT_FOUND
                self.message = (
                    "no engine found: set the engine's Python (its virtual environment's "
                    f"python) in the Text2Earth settings, or the {PYTHON_ENV} variable"
                )
                raise EngineError(self.message)
            self.state, self.message = STARTING, f"starting the engine with {python}"
            self._stop_requested = False
            extra = ["--demo-fallback"] if self.settings.demo_fallback else []
            try:
                service = start_local_service(
                    python,
                    output_dirs=[self.settings.staging_dir] if self.settings.staging_dir else None,
                    model=self.settings.model,
                    device=self.settings.device,
                    token_file=self.settings.token_file,
                    extra_args=extra,
                    timeout=self.settings.start_timeout,
                )
            except EngineError as exc:
                self.state, self.message = FAILED, str(exc)
                raise
            if self._stop_requested:  # QGIS closed, or the plugin unloaded, meanwhile
                self._stop_requested = False
                service.stop()
                self.state, self.message = STOPPED, "stopped"
                raise EngineError("the engine was stopped while it was starting")
            self._service, self._client = service, service.client
            self._note_health(service.client.health())
            return service.client

    def _note_health(self, info: dict) -> None:
        device = info.get("device") or {}
        self.state = CONNECTED
        self.device_name = device.get("name") or device.get("type") or "?"
        models = info.get("models") or []
        check = any(m.get("pipeline_check") for m in models)
        self.message = f"connected, {self.device_name}" + (
            " (demo weights: a pipeline check, not imagery)" if check else ""
        )

    def stop(self) -> None:
        """Stop the service if this plugin started it; a user's own engine is left alone.

        Never waits for a start under way in a task (that can take minutes): the start then
        stops what it started as soon as it is up.
        """
        if not self._lock.acquire(timeout=0.2):
            self._stop_requested = True
            return
        try:
            if self._service is not None:
                self._service.stop()
            self._service = self._client = None
            self.state, self.message = STOPPED, "stopped"
        finally:
            self._lock.release()

    def log_tail(self) -> str:
        return self._service.log_tail() if self._service is not None else ""
