"""Putting a finished file in place. Stdlib only; the engine and the plugin both use it."""

from __future__ import annotations

import os
from pathlib import Path


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


def unused_name(name: str, taken) -> str:
    """``name``, or 'stem_2.tif', 'stem_3.tif', ... the first one ``taken(name)`` denies."""
    if not taken(name):
        return name
    stem, dot, suffix = name.rpartition(".")
    number = 2
    while taken(f"{stem}_{number}{dot}{suffix}"):
        number += 1
    return f"{stem}_{number}{dot}{suffix}"


def default_output_folder(project_home: str, documents: str) -> Path:
    """Where results go when the user chose no folder: beside a saved project, else in the
    user's documents; never a temporary folder, whose files QGIS warns it will lose."""
    if project_home:
        return Path(project_home) / "text2earth"
    return Path(documents) / "Text2Earth"
