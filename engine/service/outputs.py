"""Where a job may write: only inside the service's output folders."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from engine.errors import InputError


def default_output_dir() -> Path:
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "text2earth" / "outputs"


def resolve_output(out: str | None, output_dirs: list[Path], job_id: str) -> Path:
    """The absolute file a job writes; refuses anything that resolves outside the folders.

    Resolving follows symlinks already on disk, so `../`, absolute paths elsewhere and a
    symlink inside a folder that points out are all caught the same way.
    """
    roots = [Path(d).resolve() for d in output_dirs]
    if out is None or not str(out).strip():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        return roots[0] / f"text2earth-{stamp}-{job_id[:8]}.tif"
    if "\x00" in out:
        raise InputError("out contains a NUL character")
    given = Path(out).expanduser()
    candidate = (given if given.is_absolute() else roots[0] / given).resolve()
    if not any(candidate == root or root in candidate.parents for root in roots):
        folders = ", ".join(str(r) for r in roots)
        raise InputError(
            f"out {out!r} resolves to {candidate}, outside the service's output folders "
            f"({folders}): give a file name, or a path inside one of them"
        )
    if candidate in roots:
        raise InputError(f"out {out!r} is an output folder itself; give a file name")
    return candidate
