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
