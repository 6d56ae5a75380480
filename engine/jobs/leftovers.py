"""Our files left beside outputs by a job that died (kill -9, power loss): found by their
names, told stale, listed and removed.

- Temp files ``.t2e-<pid>-<hex>.<kind>`` (engine.geo.geotiff.temp_stem): stale once their
  process is gone, or when untouched for a day (the pid may have been reused). Older releases
  named them ``.NAME.tif.<8 hex>.tmp.tif``: stale after an hour untouched.
- Scene stores ``.t2e-scene-<hash>.tif`` with their state ``.json`` and redo file ``.redo``
  (engine.scenes.store): a resumable scene is kept with its state (listed by ``text2earth
  resume --list`` and the service's /health) until it is resumed, cleaned (``text2earth
  clean``) or a week old; a scratch or redo without its state, a non-resumable store whose
  process is gone, or a store whose output was written after it (the job ended), is stale.
- Output locks ``.t2e-lock-<hash>`` (engine.scenes.lock): stale when no process holds them;
  removed while locked, so a run starting meanwhile is never left without its lock.
Files of a live process (its pid alive, or its output's lock held) are never touched.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from engine.geo.geotiff import SCRATCH_PREFIX, TEMP_PREFIX
from engine.scenes.folder import OutputFolder
from engine.scenes.lock import LOCK_PREFIX, held, lock_name, release_lock_file, try_lock_file

TEMP_RE = re.compile(rf"^{re.escape(TEMP_PREFIX)}(\d+)-[0-9a-z_]{{8}}\.[a-z0-9.-]+$")
LEGACY_TEMP_RE = re.compile(
    r"^\..+\.(?:[0-9a-f]{8}\.(?:tmp\.tif|edit-(?:scratch|written)-\d+\.tif)"
    r"|tif\.scene-(?:scratch\.tif|state\.json(?:\.tmp)?))$")
SCRATCH_RE = re.compile(rf"^{re.escape(SCRATCH_PREFIX)}([0-9a-f]{{12}})\.(tif|json|redo)$")
LOCK_RE = re.compile(rf"^{re.escape(LOCK_PREFIX)}[0-9a-f]{{12}}$")
TEMP_STALE_S = 24 * 3600
LEGACY_STALE_S = 3600
RESUME_KEEP_S = 7 * 24 * 3600
STATE_GRACE_S = 60  # a state written a moment before its scratch is created
MAX_ENTRIES = 100_000  # a sweep of a huge tree stops here rather than stall a start-up


@dataclass
class Resumable:
    """A stopped scene that rerunning the same command resumes."""

    out: Path
    scratch: Path
    state: Path
    done: int
    windows: int | None
    age_s: float
    size: int

    def describe(self) -> dict:
        return {"out": str(self.out), "scratch": str(self.scratch), "windows_done": self.done,
                "windows": self.windows, "age_s": round(self.age_s), "bytes": self.size}


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _age(path: Path, now: float) -> float | None:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return None


def _state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _folders(folder: Path, recursive: bool):
    folder = Path(folder)
    if not recursive:
        try:
            yield folder, os.listdir(folder)
        except OSError:  # gone, or not ours to read: nothing of ours to find there
            pass
        return
    seen = 0
    for root, dirs, files in os.walk(folder):
        seen += len(dirs) + len(files)
        yield Path(root), files
        if seen > MAX_ENTRIES:
            return


def stale_files(folder: Path, recursive: bool = False, everything: bool = False,
                now: float | None = None) -> list[Path]:
    """Our leftovers in ``folder`` that may go. ``everything``: also resumable scenes (the
    ``clean`` command); files of a live process are kept either way."""
    now = time.time() if now is None else now
    found = []
    for root, names in _folders(folder, recursive):
        names = set(names)
        for name in sorted(names):
            path = root / name
            if match := TEMP_RE.match(name):
                age = _age(path, now)
                if not pid_alive(int(match[1])) or (age is not None and age > TEMP_STALE_S):
                    found.append(path)
            elif LEGACY_TEMP_RE.match(name):
                age = _age(path, now)
                if everything or (age is not None and age > LEGACY_STALE_S):
                    found.append(path)
            elif (match := SCRATCH_RE.match(name)) and match[2] == "json":
                parts = [p for p in (path.with_suffix(".tif"), path.with_suffix(".redo"))
                         if p.name in names]
                if _scene_stale(path, path.with_suffix(".tif").name in names, now, everything):
                    found += [path, *parts]
            elif match and path.with_suffix(".json").name not in names:
                found.append(path)  # a scratch or redo without its state cannot be resumed
            elif LOCK_RE.match(name) and not held(root, name):
                found.append(path)
    return found


def _scene_stale(state_path: Path, has_scratch: bool, now: float, everything: bool) -> bool:
    state = _state(state_path) or {}
    pid = state.get("pid")
    live = isinstance(pid, int) and pid_alive(pid)
    out = state.get("out")
    if isinstance(out, str) and held(state_path.parent, lock_name(state_path.parent / out)):
        return False  # its output is locked: a run in progress, whatever its pid says
    age = _age(state_path, now)
    if live and (age is None or age < RESUME_KEEP_S):
        return False  # a scene in progress (joint denoising writes no state while it runs)
    if not has_scratch:
        return age is None or age > STATE_GRACE_S
    if everything or not state.get("resumable", True) or _finished(state_path, out):
        return True
    return age is None or age > RESUME_KEEP_S


def _finished(state_path: Path, out) -> bool:
    """The output was written after the state's last window: the job ended (killed while it
    removed its store), nothing is left to resume."""
    if not isinstance(out, str):
        return False
    try:
        return (state_path.parent / out).stat().st_mtime_ns >= state_path.stat().st_mtime_ns
    except OSError:
        return False


def remove_stale(folder: Path, recursive: bool = False, everything: bool = False) -> list[Path]:
    """Remove what stale_files finds; return what was removed."""
    removed = []
    for path in stale_files(folder, recursive, everything):
        if LOCK_RE.match(path.name):
            if _remove_lock(path):
                removed.append(path)
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            continue  # not ours to fight over (permissions): listed next time again
        removed.append(path)
    return removed


def _remove_lock(path: Path) -> bool:
    """Take the lock, then remove it (as its owner would): never one a run holds now."""
    try:
        folder = OutputFolder(path.parent)
    except OSError:
        return False
    try:
        fd = try_lock_file(folder, path.name)
        if fd is None:
            return False
        release_lock_file(folder, path.name, fd)
        if os.name == "nt":  # unlocked and closed now; a run holding it open would refuse this
            folder.unlink(path.name)
        return not folder.exists(path.name)
    except OSError:
        return False
    finally:
        folder.close()


def resumable_scenes(folder: Path, recursive: bool = False,
                     now: float | None = None) -> list[Resumable]:
    """Stopped scenes kept for a resume: scratch and state together, not in progress."""
    now = time.time() if now is None else now
    found = []
    for root, names in _folders(folder, recursive):
        for name in sorted(names):
            match = SCRATCH_RE.match(name)
            if not match or match[2] != "json":
                continue
            scratch = root / f"{SCRATCH_PREFIX}{match[1]}.tif"
            state = _state(root / name)
            if state is None or not state.get("resumable", True) or scratch.name not in names \
                    or _finished(root / name, state.get("out")):
                continue
            pid = state.get("pid")
            if isinstance(pid, int) and pid_alive(pid) and pid != os.getpid():
                continue  # running now
            if held(root, lock_name(root / str(state.get("out", "?")))):
                continue  # its output is being written now
            try:
                size = scratch.stat().st_size
            except OSError:
                continue
            out = root / state.get("out", "?")
            found.append(Resumable(out, scratch, root / name, len(state.get("done", [])),
                                   state.get("windows"), _age(root / name, now) or 0.0, size))
    return found
