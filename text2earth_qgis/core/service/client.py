"""Client of the local Text2Earth engine service. Stdlib only (urllib, json, subprocess).

Used by the QGIS plugin (inside QgsTasks, never on the UI thread) and by scripts. Every
failure is one of the exceptions below, with a message a GIS user can act on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess  # nosec B404 - starts the engine with a list argv, never a shell
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract.child_process import NO_WINDOW, clean_env
from ..contract.files import (
    OutputFolderError,
    check_output_folder,
    place_file,
    remove_quietly,
    write_problem,
)
from .http_open import open_http

API_VERSION = 1
FINAL_STATES = ("done", "failed", "cancelled")


class EngineError(Exception):
    """Base of every client error."""


class ServiceNotRunning(EngineError):  # noqa: N818 - reads as the state it reports
    pass


class IncompatibleVersion(EngineError):  # noqa: N818
    pass


class ServiceError(EngineError):
    """The service answered with an HTTP error; ``message`` is its own one-line reason,
    ``kind`` its stable ``error_kind`` (None from engines older than that)."""

    def __init__(self, status: int, message: str, errors: list | None = None,
                 kind: str | None = None) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message
        self.errors = errors or []
        self.kind = kind


class JobFailed(EngineError):  # noqa: N818
    """The job ended failed; ``kind`` is its stable ``error_kind`` (engine.errors), None from
    engines older than that."""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class JobCancelled(EngineError):  # noqa: N818
    pass


class ServiceStartError(EngineError):
    pass


class DeliveryError(EngineError):
    """The result could not be put in its folder; the message names the folder and the fix."""


class JobTimeout(EngineError, TimeoutError):  # noqa: N818
    """wait() gave up; the job goes on in the engine."""


class EngineClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: dict | None = None, raw: bool = False,
                 timeout: float | None = None, into=None):
        """The answer's JSON (or bytes with ``raw``); with ``into`` (a binary file open for
        writing) the body is streamed there. A write error there is a DeliveryError, never
        mistaken for an engine that does not answer."""
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with open_http(request, timeout=timeout or self.timeout) as response:
                if into is not None:  # stream to a file: a GeoTIFF can be gigabytes
                    _copy_into(response, into)
                    return None
                payload = response.read()
                if raw:
                    return payload
                return json.loads(payload) if payload else None
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read() or b"{}")
            except ValueError:
                detail = {}
            if not isinstance(detail, dict):
                detail = {}
            message = detail.get("detail")
            if not isinstance(message, str):
                message = exc.reason if isinstance(exc.reason, str) else f"HTTP {exc.code}"
            kind = detail.get("error_kind")
            raise ServiceError(exc.code, message, detail.get("errors"),
                               kind if isinstance(kind, str) else None) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceNotRunning(
                f"the Text2Earth engine at {self.url} is not answering ({reason}): start it, "
                "or check the engine URL in the plugin settings"
            ) from None

    def health(self) -> dict:
        info = self._request("GET", "/health")
        if not isinstance(info, dict) or info.get("service") != "text2earth":
            raise IncompatibleVersion(f"{self.url} is not a Text2Earth engine service")
        if info.get("api_version") != API_VERSION:
            raise IncompatibleVersion(
                f"the engine at {self.url} speaks API version {info.get('api_version')}, this "
                f"client version {API_VERSION}: update the engine and the plugin together"
            )
        return info

    def submit(self, job: dict) -> dict:
        return self._request("POST", "/jobs", job)

    def jobs(self) -> list[dict]:
        return self._request("GET", "/jobs")["jobs"]

    def status(self, job_id: str, since: int | None = None, wait_s: float = 0) -> dict:
        """The job's status; with ``since`` (a status's ``version``) and ``wait_s``, the
        service answers as soon as the job changes, or after ``wait_s`` seconds."""
        if since is None or wait_s <= 0:
            return self._request("GET", f"/jobs/{job_id}")
        # The answer may legitimately take wait_s: allow for it in this request only.
        return self._request("GET", f"/jobs/{job_id}?since={since}&wait_s={wait_s:g}",
                             timeout=self.timeout + wait_s)

    def cancel(self, job_id: str) -> dict:
        return self._request("DELETE", f"/jobs/{job_id}")

    def result(self, job_id: str) -> dict:
        return self._request("GET", f"/jobs/{job_id}/result")

    def preview(self, job_id: str) -> bytes | None:
        try:
            return self._request("GET", f"/jobs/{job_id}/preview", raw=True)
        except ServiceError as exc:
            if exc.status == 404:
                return None
            raise

    def download(self, job_id: str, destination: str | Path, overwrite: bool = False,
                 candidate: int | None = None) -> Path:
        """The job's GeoTIFF (or its variation ``candidate``, 1-based) into ``destination``: a
        local move when the engine's file is on this machine, else a download; via a temp
        file, never clobbering unless asked. A delivery that fails says why (DeliveryError
        naming the folder), leaves no temp file, and keeps the engine's copy, named."""
        destination = Path(destination)
        result = self.result(job_id)
        route = f"/jobs/{job_id}/file"
        if candidate is None:
            staged = result.get("path")
        else:
            route += f"?candidate={int(candidate)}"
            entries = [c for c in result.get("candidates") or []
                       if isinstance(c, dict) and c.get("index") == candidate]
            staged = entries[0].get("path") if entries else None
        tmp = destination.with_name(f".{destination.name}.{os.getpid()}.part")
        source = Path(staged) if staged else None
        local = source is not None and source.is_file()
        delivered = False
        try:
            try:
                check_output_folder(destination.parent)
            except OutputFolderError as exc:
                raise DeliveryError(str(exc)) from None
            if destination.exists() and not overwrite:
                raise EngineError(f"{destination} already exists")
            try:
                if local:
                    try:
                        os.link(source, tmp)  # same file system: no copy at all
                    except OSError:
                        shutil.copyfile(source, tmp)
                else:  # the engine is elsewhere, or says which variations it kept (404)
                    with open(tmp, "wb") as fh:
                        self._request("GET", route, timeout=max(self.timeout, 300), into=fh)
                place_file(tmp, destination, overwrite)
                delivered = True
            except FileExistsError:
                raise EngineError(f"{destination} already exists") from None
            except OSError as exc:
                raise DeliveryError(write_problem(destination.parent, exc)) from None
        except EngineError as exc:
            if not local:
                raise
            # Minutes of generation are not thrown away: the engine's copy stays, named.
            raise type(exc)(f"{exc} The result is kept at {source}.") from None
        finally:
            remove_quietly(tmp)
            if delivered and local and not _same_file(source, destination):
                remove_quietly(source)  # moved: the staging copy is not needed any more
        return destination

    def wait(
        self,
        job_id: str,
        poll: float = 1.0,
        timeout: float | None = None,
        on_progress: Callable[[dict], Any] | None = None,
    ) -> dict:
        """Follow the job until it ends (long polls of at most ``poll`` seconds, answered at
        each change); the result of a done job, else JobFailed / JobCancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        version = -1
        while True:
            wait_s = poll
            if deadline is not None:
                wait_s = max(0.0, min(poll, deadline - time.monotonic()))
            status = self.status(job_id, since=version, wait_s=wait_s)
            version = status.get("version", version)
            if on_progress is not None:
                on_progress(status)
            state = status["state"]
            if state == "done":
                return self.result(job_id)
            if state == "failed":
                raise JobFailed(status.get("error") or "the job failed", status.get("error_kind"))
            if state == "cancelled":
                raise JobCancelled("the job was cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {job_id} still {state} after {timeout} s")
            if "version" not in status:  # an older service without long polling
                time.sleep(poll)


def _copy_into(response, into) -> None:
    while chunk := response.read(1 << 20):
        try:
            into.write(chunk)
        except OSError as exc:
            raise DeliveryError(write_problem(Path(getattr(into, "name", "")).parent, exc)) \
                from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


@dataclass
class LocalService:
    """A service process this client started; ``stop()`` ends it."""

    process: subprocess.Popen
    url: str
    client: EngineClient
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        shutil.rmtree(self.log_path.parent, ignore_errors=True)  # port file and log

    def log_tail(self, lines: int = 20) -> str:
        return read_tail(self.log_path, lines)


def read_tail(path: str | Path, lines: int = 15) -> str:
    """A log's last lines ('' when it cannot be read)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])
    except OSError:
        return ""


def read_token(token_file: str | Path | None) -> str | None:
    if not token_file:
        return None
    try:
        return Path(token_file).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def start_local_service(
    python: str,
    output_dirs: list[str] | None = None,
    model: str | None = None,
    device: str | None = None,
    token_file: str | Path | None = None,
    extra_args: list[str] | None = None,
    timeout: float = 120.0,
    env: dict | None = None,
    port: int = 0,
    on_spawn: Callable[[subprocess.Popen], None] | None = None,
) -> LocalService:
    """Start `python -m engine.cli serve` on a loopback port (0: any free one) and wait for
    /health. ``on_spawn`` gets the process as soon as it exists, so that a stop asked during
    the wait (QGIS closing) can end it instead of leaving it running unowned."""
    workdir = Path(tempfile.mkdtemp(prefix="text2earth-service-"))
    port_file = workdir / "port"
    log_path = workdir / "service.log"
    args = [python, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--port-file", str(port_file)]
    for folder in output_dirs or []:
        args += ["--output-dir", str(folder)]
    if model:
        args += ["--model", model]
    if device:
        args += ["--device", device]
    if token_file:
        args += ["--token-file", str(token_file)]
    args += extra_args or []
    log = open(log_path, "wb")  # noqa: SIM115 - the child keeps writing after we return
    try:
        # cwd: QGIS's working folder could hold an engine/ that `-m engine.cli` would import.
        process = subprocess.Popen(  # nosec B603 - list argv: the engine's Python + flags
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=clean_env(extra=env), creationflags=NO_WINDOW, cwd=workdir,
        )
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ServiceStartError(f"cannot run the engine's Python {python!r}: {exc}") from None
    finally:
        log.close()
    if on_spawn is not None:
        on_spawn(process)

    def tail() -> str:
        """The log's last lines, then the start's temp folder is removed."""
        try:
            return read_tail(log_path, 15)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    deadline = time.monotonic() + timeout
    client = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceStartError(
                f"the engine service exited with code {process.returncode} while starting:\n"
                + tail()
            )
        if client is None and port_file.is_file():
            port = port_file.read_text(encoding="ascii").strip()
            if port:
                client = EngineClient(f"http://127.0.0.1:{int(port)}", read_token(token_file))
        if client is not None:
            try:
                client.health()
                return LocalService(process, client.url, client, log_path)
            except ServiceNotRunning:
                pass
        time.sleep(0.1)
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    raise ServiceStartError(f"the engine service did not answer within {timeout:.0f} s:\n" + tail())
