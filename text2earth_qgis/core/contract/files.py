"""Putting a finished file in place. Stdlib only; the engine and the plugin both use it."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

# A tag that says what kind of result a file is ("x.pipeline-check.tif"): a clash counter goes
# before it, so the name still ends with what the file is ("x_2.pipeline-check.tif").
KIND_TAGS = (".pipeline-check",)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class OutputFolderError(ValueError):
    """The output folder cannot take a file; the message names it and the fix."""


def place_file(tmp: Path, destination: Path, overwrite: bool = False) -> None:
    """Rename ``tmp`` to ``destination`` atomically; without ``overwrite`` an existing file is
    never replaced, even one that appeared a moment ago (FileExistsError)."""
    if overwrite:
        os.replace(tmp, destination)
        return
    try:
        os.link(tmp, destination)  # atomic, and fails if the name is taken
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        if destination.exists():
            raise FileExistsError(destination) from None
        os.replace(tmp, destination)
    else:
        tmp.unlink(missing_ok=True)


def split_name(name: str) -> tuple[str, str]:
    """('x', '.pipeline-check.tif') for 'x.pipeline-check.tif', ('x', '.tif') for 'x.tif':
    the part a counter may follow, and the suffix (with any kind tag) that stays last."""
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    suffix = dot + extension
    for tag in KIND_TAGS:
        if stem.endswith(tag):
            return stem[: -len(tag)], tag + suffix
    return stem, suffix


def unused_name(name: str, taken) -> str:
    """``name``, or 'stem_2.tif', 'stem_3.tif', ... the first one ``taken(name)`` denies; the
    counter goes before a kind tag: 'x_2.pipeline-check.tif'."""
    if not taken(name):
        return name
    stem, suffix = split_name(name)
    number = 2
    while taken(f"{stem}_{number}{suffix}"):
        number += 1
    return f"{stem}_{number}{suffix}"


def write_problem(folder: str | Path, error: OSError) -> str:
    """The user's sentence for ``error``, met writing into ``folder``: cause and fix."""
    fix = "Choose another output folder."
    code = error.errno
    if code in READ_ONLY:
        return f"Cannot write to {folder}: it is read-only. {fix}"
    if code == errno.ENOSPC or code == getattr(errno, "EDQUOT", None):
        return f"Cannot write to {folder}: the disk is full. Free some space, or {fix.lower()}"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return f"Cannot write to {folder}: a file of that name is in the way. {fix}"
    reason = error.strerror or str(error) or type(error).__name__
    return f"Cannot write to {folder}: {reason}. {fix}"


def check_output_folder(folder: str | Path) -> Path:
    """``folder``, created if needed, once a file was really made and removed in it (the one
    honest test, Windows' ACLs included); OutputFolderError naming it and the fix otherwise.
    Called before a job is sent, so no run ends with nowhere to put its result."""
    folder = Path(folder)
    if not str(folder).strip():
        raise OutputFolderError("No output folder is set. Choose an output folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".text2earth-write-check-")
    except OSError as exc:
        raise OutputFolderError(write_problem(folder, exc)) from None
    os.close(handle)
    try:
        os.unlink(probe)
    except OSError as exc:  # made but not removable: as unusable for a checked rename
        raise OutputFolderError(write_problem(folder, exc)) from None
    return folder


def remove_quietly(path: Path | None) -> None:
    """Clean-up that never hides the error being reported: a file that cannot go stays."""
    if path is None:
        return
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def default_output_folder(project_home: str, documents: str) -> Path:
    """Where results go when the user chose no folder: beside a saved project, else in the
    user's documents; never a temporary folder, whose files QGIS warns it will lose."""
    if project_home:
        return Path(project_home) / "text2earth"
    return Path(documents) / "Text2Earth"
