"""A resumable job's files and journal: names keyed on the job's identity, the fingerprint
of everything that shapes its pixels, and the state file (which windows are done, with the
checksums of the pixels they left).

Names: ``.t2e-scene-<tag>.tif`` (the scratch raster), ``.json`` (the state), ``.redo``
(a group of windows being written), where ``tag`` hashes the output's name and the job's
fingerprint: two jobs to one output (another seed) never share a scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.geo.geotiff import SCRATCH_PREFIX, temp_stem, write_failure
from engine.scenes.folder import OutputFolder


@dataclass(frozen=True)
class ScratchNames:
    scratch: Path
    state: Path
    redo: Path


def scratch_names(out: Path, key: str) -> ScratchNames:
    """Short names (a hash), so any name the file system accepts for the output fits them."""
    out = Path(out)
    tag = hashlib.sha256(out.name.encode("utf-8", "surrogateescape") + b"\0"
                         + key.encode()).hexdigest()[:12]
    stem = out.with_name(f"{SCRATCH_PREFIX}{tag}")
    return ScratchNames(stem.with_suffix(".tif"), stem.with_suffix(".json"),
                        stem.with_suffix(".redo"))


def fingerprint(fields: list) -> str:
    """What must be equal for a scratch to be resumed: everything that shapes pixels."""
    return hashlib.sha256(repr(fields).encode()).hexdigest()


def file_identity(path) -> tuple | None:
    """An input file's cheap identity (its size and modification time): changed, it is
    another input, and a stopped job made from it is not resumed."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def read_state(path: Path) -> dict | None:
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def load_state(path: Path, key: str) -> dict | None:
    state = read_state(path)
    return state if state is not None and state.get("fingerprint") == key else None


def save_state(folder: OutputFolder, path: Path, state: dict) -> None:
    """Atomically and durably: a temp file fsynced, renamed over the state, the folder
    fsynced. A state names its output and owner, so leftovers can be listed (``text2earth
    resume --list``) and told stale (engine.jobs.leftovers)."""
    tmp = temp_stem(folder.path).with_suffix(".state.json").name
    try:
        fd = folder.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            data = memoryview(json.dumps(state).encode())
            while data:  # a short write on a nearly full disk must not truncate it
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        folder.fsync_file(tmp)
        folder.replace(tmp, path.name)
        folder.fsync()
    except OSError as exc:
        raise write_failure(exc, path, folder.path) from exc
    finally:
        folder.unlink(tmp)


def saved_seed(out: Path) -> int | None:
    """The seed of the newest stopped resumable run of this output, so rerunning without
    --seed resumes it."""
    out = Path(out)
    best: tuple[float, int] | None = None
    try:
        names = os.listdir(out.parent)
    except OSError:
        return None
    for name in names:
        if not (name.startswith(SCRATCH_PREFIX) and name.endswith(".json")):
            continue
        path = out.parent / name
        state = read_state(path)
        seed = (state or {}).get("seed")
        if state is None or state.get("out") != out.name or not state.get("resumable") \
                or not isinstance(seed, int) or not path.with_suffix(".tif").is_file():
            continue
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if best is None or mtime > best[0]:
            best = (mtime, seed)
    return None if best is None else best[1]


def scene_files(out: Path) -> list[ScratchNames]:
    """The stores of jobs to ``out`` found beside it (by their states), newest first."""
    out = Path(out)
    found = []
    try:
        names = os.listdir(out.parent)
    except OSError:
        return []
    for name in names:
        if name.startswith(SCRATCH_PREFIX) and name.endswith(".json"):
            path = out.parent / name
            if (read_state(path) or {}).get("out") == out.name:
                found.append(ScratchNames(path.with_suffix(".tif"), path,
                                          path.with_suffix(".redo")))
    return sorted(found, key=lambda n: -n.state.stat().st_mtime if n.state.exists() else 0)
