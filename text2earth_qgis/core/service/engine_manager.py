"""Find, start, reach and stop the engine service from the plugin. Stdlib only, no Qt.

The plugin never imports torch: it starts `python -m engine.cli serve` with the engine's own
Python (a path in the settings, or the development checkout's .venv), or connects to an engine
URL the user gives. Every call here may block; the plugin runs them inside QgsTasks.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..contract.gpu_driver import detect_nvidia_driver
from ..failure_advice import SERVICE, explain
from . import service_record
from .client import (
    EngineClient,
    EngineError,
    LocalService,
    read_tail,
    read_token,
    start_local_service,
)

GPU_TYPES = ("cuda", "mps")

PYTHON_ENV = "TEXT2EARTH_ENGINE_PYTHON"
NOT_FOUND, STOPPED, STARTING, CONNECTED, FAILED, CRASHED = (
    "not found", "stopped", "starting", "connected", "failed", "crashed"
)

# The one call to action of a fresh install: the dock shows it beside a "Set up engine..."
# button, so it names that button and not a settings key.
NO_ENGINE_MESSAGE = (
    "no engine installed yet: click Set up engine… to install it in its own Python "
    "environment (PyTorch, a download of several GB), or choose an existing engine's Python "
    "in the Engine tab"
)


def venv_python(venv: Path, platform: str = sys.platform) -> Path:
    return venv / ("Scripts/python.exe" if platform == "win32" else "bin/python")


def find_engine_python(configured: str | None = None) -> str | None:
    """The settings' path, else $TEXT2EARTH_ENGINE_PYTHON, else a dev checkout's .venv."""
    candidates = [configured, os.environ.get(PYTHON_ENV)]
    checkout = Path(__file__).resolve().parents[3]
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
    port: int = 0  # a fixed port for scripts to find; 0: any free one
    record_file: str = ""  # remembers our service for the next session; "" = don't
    model_cache: str = ""  # Hugging Face cache the engine reads; "" = its default


@dataclass
class EngineManager:
    settings: EngineSettings
    state: str = STOPPED
    message: str = ""
    device_name: str = ""
    health: dict = field(default_factory=dict)  # the last /health answer, for diagnostics
    _service: LocalService | None = None
    _client: EngineClient | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # How many stops were asked: a start asked before the latest stop must not leave an engine
    # (QGIS closing, the plugin unloading while a connect task is queued or starting).
    stops: int = 0
    _spawned: object | None = None  # the service process while it starts (a Popen)
    _driver: str | None = None  # this machine's NVIDIA driver ("" none), asked once if needed
    _adopted: service_record.ServiceRecord | None = None
    last_log: str = ""  # the log's last lines when the service failed or crashed
    device_type: str = ""  # "cuda", "mps", "cpu" from /health; kept after a crash
    crash_advice: str = ""  # why the engine crashed and what to do, for a job it ended

    @property
    def client(self) -> EngineClient | None:
        return self._client

    @property
    def gpu(self) -> bool | None:
        """Whether the engine computes on a GPU: GPU advice only then. Before the engine has
        said (it died while starting), a machine without an NVIDIA driver counts as CPU-only
        for a local engine; None: not known."""
        if self.device_type:
            return self.device_type in GPU_TYPES
        if self.settings.url or sys.platform == "darwin":
            return None  # another machine's engine, or a Mac's GPU (MPS): cannot tell here
        if self._driver is None:
            self._driver = detect_nvidia_driver() or ""
        return None if self._driver else False

    def check_alive(self) -> bool:
        """Cheap, never blocks: True when the local engine's process has exited since it was
        last seen (the state is then CRASHED, with the log's cause)."""
        if not self._lock.acquire(blocking=False):
            return False  # a start or a check is under way: it will tell
        try:
            service, adopted = self._service, self._adopted
            dead = (service is not None and service.process.poll() is not None) or (
                adopted is not None and not service_record.pid_alive(adopted.pid))
            if not dead:
                return False
            self._client = None
            try:
                self._forget_service()
            except EngineError:
                pass  # _crashed said why in the state and message
            return True
        finally:
            self._lock.release()

    def lost_contact(self, error: str) -> str:
        """The engine stopped answering during a job: the state says what happened (crashed
        when our process exited) and the answer is the message for the user. Advice about the
        engine URL only when the user gave one."""
        with self._lock:
            self._client = None
            if self.state == CRASHED:  # seen already by check_alive()
                return self.crash_advice
            if self.settings.url:
                self.state, self.message = FAILED, f"not answering at {self.settings.url}"
                return error
            try:
                self._forget_service()  # stops a local engine that no longer answers
            except EngineError as exc:
                return str(exc)
            self.state = FAILED
            self.message = "stopped answering; it was stopped: Connect starts it again"
            return ("The engine stopped answering and was stopped. Connect (at the top of the "
                    "dock) starts it again; if it happens again, Copy diagnostics in the "
                    "Engine tab puts its log on the clipboard for a bug report.")

    def ensure_running(self, since: int | None = None) -> EngineClient:
        """A client of a healthy engine, starting one if needed; raises EngineError.

        ``since``: ``stops`` when the start was asked (a task made earlier); a stop after it
        means no engine is started, and one spawned meanwhile is ended."""
        since = self.stops if since is None else since
        with self._lock:
            if self._client is not None:
                try:
                    self._note_health(self._client.health())
                    return self._client
                except EngineError:
                    self._client = None
                    self._forget_service()  # raises when it crashed: restart is offered
            if self.settings.url:
                client = EngineClient(self.settings.url, read_token(self.settings.token_file))
                self._note_health(client.health())
                self._client = client
                return client
            leftover, note = service_record.find_leftover(
                self.settings.record_file, read_token(self.settings.token_file))
            if leftover is not None:
                self._adopted = service_record.read_record(self.settings.record_file)
                self._note_health(leftover.health())
                self._client, self.message = leftover, f"{self.message} ({note})"
                return leftover
            python = find_engine_python(self.settings.python)
            if python is None:
                self.state = NOT_FOUND
                self.message = NO_ENGINE_MESSAGE
                raise EngineError(self.message)
            if self.stops != since:  # stopped before the start got here: start nothing
                self.state, self.message = STOPPED, "stopped"
                raise EngineError("the engine was stopped while it was starting")
            self.state, self.message = STARTING, f"starting the engine with {python}"
            extra = ["--demo-fallback"] if self.settings.demo_fallback else []
            port, port_note = service_record.choose_port(self.settings.port)
            env = {"HF_HUB_CACHE": self.settings.model_cache} if self.settings.model_cache \
                else None
            try:
                service = start_local_service(
                    python,
                    port=port,
                    env=env,
                    output_dirs=[self.settings.staging_dir] if self.settings.staging_dir else None,
                    model=self.settings.model,
                    device=self.settings.device,
                    token_file=self.settings.token_file,
                    extra_args=extra,
                    timeout=self.settings.start_timeout,
                    on_spawn=lambda process: self._note_spawned(process, since),
                )
            except EngineError as exc:
                self._spawned = None
                if self.stops != since:  # stop() ended the process while it started
                    self.state, self.message = STOPPED, "stopped"
                    raise EngineError("the engine was stopped while it was starting") from None
                advice = explain(str(exc), SERVICE, gpu=self.gpu)
                self.state, self.last_log, self.message = FAILED, str(exc), str(exc)
                if advice.kind == "failed":  # no known cause: the error says it best
                    raise
                self.message = advice.message(with_log=False)
                raise EngineError(f"{self.message}\n{exc}") from None
            self._spawned = None
            if self.stops != since:  # QGIS closed, or the plugin unloaded, meanwhile
                service.stop()
                self.state, self.message = STOPPED, "stopped"
                raise EngineError("the engine was stopped while it was starting")
            self._service, self._client = service, service.client
            if self.settings.record_file:
                service_record.write_record(self.settings.record_file, service_record.ServiceRecord(
                    service.process.pid, service.url, python, str(service.log_path), time.time()))
            self._note_health(service.client.health())
            if port_note:
                self.message += f" ({port_note})"
            return service.client

    def _note_spawned(self, process, since: int) -> None:
        self._spawned = process
        if self.stops != since and process.poll() is None:  # stop() came before the spawn
            process.terminate()

    def _forget_service(self) -> None:
        """The engine stopped answering: if our process died, say why and offer a restart."""
        service, self._service = self._service, None
        adopted, self._adopted = self._adopted, None
        if service is None:
            if adopted is not None and not service_record.pid_alive(adopted.pid):
                service_record.clear_record(self.settings.record_file)
                self._crashed(None, read_tail(adopted.log_path))
            return
        code = service.process.poll()
        tail = service.log_tail(15)
        service.stop()
        service_record.clear_record(self.settings.record_file)
        if code is not None:
            self._crashed(code, tail)

    def _crashed(self, code: int | None, tail: str) -> None:
        advice = explain("", SERVICE, returncode=code, log_tail=tail, exited=True, gpu=self.gpu)
        self.state, self.last_log = CRASHED, tail
        cause = log_cause(tail)
        self.crash_advice = advice.message(with_log=False) + (
            f" (the log's last error: {cause})" if cause else "")
        self.message = "crashed: " + self.crash_advice
        raise EngineError(advice.message())

    def _note_health(self, info: dict) -> None:
        device = info.get("device") or {}
        self.state = CONNECTED
        self.device_type = str(device.get("type") or "")
        self.device_name = device.get("name") or device.get("type") or "?"
        self.health = info
        models = info.get("models") or []
        check = any(m.get("pipeline_check") for m in models)
        report = info.get("device_report") or {}
        # Without an NVIDIA driver there is (almost always) no GPU to miss: the line stays
        # "connected, CPU ..."; where a GPU is there but unused, it says why and what to do.
        unused_gpu = report and not report.get("gpu_used") and report.get("nvidia_driver")
        gpu = f"; GPU not used: {report.get('reason')}" if unused_gpu else ""
        self.message = f"connected, {self.device_name}{gpu}" + (
            " (demo weights: a pipeline check, not imagery)" if check else ""
        )
        if info.get("model_error"):
            advice = explain(info["model_error"], SERVICE, gpu=self.gpu)
            self.message += f"; {advice.message(False)}"

    def stop(self) -> None:
        """Stop the service if this plugin started it; a user's own engine is left alone.

        Never waits for a start under way in a task (that can take minutes): the start then
        stops what it started as soon as it is up.
        """
        self.stops += 1
        if not self._lock.acquire(timeout=0.2):
            # QGIS may exit before the start returns: end the process now, or nobody will.
            process = self._spawned
            if process is not None and process.poll() is None:
                process.terminate()
            return
        try:
            if self._service is not None:
                self._service.stop()
            elif self._adopted is not None:  # an earlier session's: ours to stop as well
                service_record.stop_pid(self._adopted.pid)
            if self._service is not None or self._adopted is not None:
                service_record.clear_record(self.settings.record_file)
            self._service = self._client = self._adopted = None
            self.state, self.message = STOPPED, "stopped"
        finally:
            self._lock.release()

    def log_tail(self) -> str:
        if self._service is not None:
            return self._service.log_tail()
        if self._adopted is not None:
            return read_tail(self._adopted.log_path)
        return self.last_log




def log_cause(tail: str) -> str:
    """The line of a log tail that names what went wrong: the last 'SomeError: ...' line
    (a traceback's conclusion), else the last line; '' for an empty log."""
    lines = [line.strip() for line in (tail or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b:?", line):
            return line
    return lines[-1] if lines else ""
