"""The user's cache folder for the engine's own files (demo weights, compiled kernels, the
weights' hashes): $XDG_CACHE_HOME, else ~/.cache, then text2earth/."""

from __future__ import annotations

import os
from pathlib import Path


def text2earth_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "text2earth"
