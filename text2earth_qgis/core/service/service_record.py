"""Remember the service this plugin started, so a later QGIS session (after a crash, say)
finds it: reused when it is ours and healthy, otherwise forgotten. Stdlib only.

"Ours" means the service answers /health with our token (a secret only we hold) and reports
the process id we recorded; a port taken by anything else just means another port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .client import EngineClient, EngineError


@dataclass(frozen=True)
class ServiceRecord:
    pid: int
    url: str
    python: str
    log_path: str
    started: float


def write_record(path: str | Path, record: ServiceRecord) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(record)), encoding="utf-8")
    os.replace(tmp, path)


def read_record(path: str | Path | None) -> ServiceRecord | None:
    if not path:
        return None
    try:
        return ServiceRecord(**json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def clear_record(path: str | Path | None) -> None:
    if path:
        Path(path).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, but not ours to signal: never reused (health decides)
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259
    finally:
        kernel32.CloseHandle(handle)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(preferred: int) -> tuple[int, str]:
    """The preferred port when free; else 0 (any free one) and a note saying why."""
    if not preferred or port_is_free(preferred):
        return preferred, ""
    return 0, (f"port {preferred} is used by another program: the engine listens on a free "
               "port instead")


def find_leftover(path: str | Path | None, token: str | None) -> tuple[EngineClient | None, str]:
    """A client of our earlier service if it still runs and answers as ours; else None and a
    note (empty when there was nothing to find). A stale record is removed."""
    record = read_record(path)
    if record is None:
        return None, ""
    if not pid_alive(record.pid):
        clear_record(path)
        return None, ""
    client = EngineClient(record.url, token, timeout=5.0)
    try:
        info = client.health()
    except EngineError:
        clear_record(path)
        return None, (f"a service from an earlier session (process {record.pid}) does not "
                      "answer as ours: a new one is started")
    if info.get("pid") != record.pid:
        clear_record(path)
        return None, "the recorded service's port now belongs to another process"
    return client, f"reusing the engine left running by an earlier session ({record.url})"


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop an adopted service (not our child: no Popen to wait on)."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        try:
            os.waitpid(pid, os.WNOHANG)  # reaps it if it happens to be our own child
        except (ChildProcessError, OSError, AttributeError):
            pass
        time.sleep(0.1)
