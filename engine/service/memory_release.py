"""Freed memory handed back to the system after each job. The service lives for days, and a
job over a huge raster frees hundreds of megabytes that glibc keeps in its heaps (one arena
per thread that planned or ran a job) until the process ends, so the service's resident
memory would stay at its largest job's peak."""

from __future__ import annotations

import ctypes
import gc
import sys


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Collect cycles (a failed job's traceback holds its frames' arrays), then return every
    arena's free pages to the system."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)
