"""A JSON file of the batch (a STAC file, the report) written whole or not at all: temp file
beside it (a ``.t2e-<pid>-`` name, so a killed run's is swept as stale) -> flush -> fsync ->
rename. A failure (a full disk) is DiskFullError / WriteError and leaves no temp file."""

from __future__ import annotations

import os
from pathlib import Path

from engine.geo.geotiff import temp_stem, write_failure


def write_json_text(path: str | Path, text: str) -> Path:
    """Put ``text`` at ``path`` (replacing it) durably; nothing partial on any failure."""
    path = Path(path)
    temp = temp_stem(path.parent).with_suffix(".json")
    try:
        with open(temp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())  # a delayed allocation may report the full disk only here
        os.replace(temp, path)
    except OSError as exc:
        raise write_failure(exc, path, path.parent) from None
    finally:
        temp.unlink(missing_ok=True)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself (best effort: not every file system can)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path
