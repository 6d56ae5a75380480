"""Where a job may write: only inside the service's output folders."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timezone
from pathlib import Path

from engine.errors import InputError


def default_output_dir() -> Path:
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "text2earth" / "outputs"


def resolve_output(out: str | None, output_dirs: list[Path], job_id: str) -> Path:
    """The absolute file a job writes; refuses anything that resolves outside the folders.

    ``output_dirs`` are the folders as resolved when the service started (ServiceConfig):
    they are not resolved again, so a folder swapped for a link since then is caught like
    any other way out. Resolving ``out`` follows symlinks already on disk, so `../`,
    absolute paths elsewhere and a symlink inside a folder that points out are all caught
    the same way.
    """
    roots = [Path(os.path.abspath(d)) for d in output_dirs]
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


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    # Size and mtime too: a file written after the job's was removed may get its inode back.
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def file_identity(path: str | Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime) of the file itself (a link is not followed), None when
    absent."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return _identity(st) if stat.S_ISREG(st.st_mode) else None


def open_output(path: str | Path, identity: tuple[int, ...] | None,
                output_dirs: list[Path]) -> tuple[int, int] | None:
    """(fd, size) of a finished job's output, read-only, or None when what is at ``path``
    now is not that file: a link (not followed: O_NOFOLLOW where the platform has it), another
    file (another inode, size or mtime than recorded when the job ended), or a file reached through
    a folder that now leads outside the output folders."""
    if identity is None:
        return None
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # gone, or a link (ELOOP)
        return None
    try:
        st = os.fstat(fd)
        real = _opened_path(fd) or os.path.realpath(path)
        roots = [os.path.abspath(d) for d in output_dirs]
        inside = any(os.path.commonpath([real, root]) == root for root in roots)
        if stat.S_ISREG(st.st_mode) and _identity(st) == tuple(identity) and inside:
            return fd, st.st_size
    except (OSError, ValueError):
        pass
    os.close(fd)
    return None


def _opened_path(fd: int) -> str | None:
    """Where the open file really is (Linux): immune to renames after the open."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
