"""Freed memory handed back to the system: after each job (the service lives for days, and a
job over a huge raster frees hundreds of megabytes that glibc keeps in its heaps, one arena
per thread that planned or ran a job, until the process ends, so the service's resident
memory would stay at its largest job's peak), after loading a model, and between the
denoising loop and the VAE decode (engine.model.pipeline: the UNet's freed activations and
oneDNN's weight reorders otherwise stay resident under the decode's own peak, ~140 MB more at
a full-size 256 px image)."""

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


def return_freed_heap() -> None:
    """Return every arena's free pages to the system (no collection: milliseconds)."""
    if _TRIM is not None:
        _TRIM(0)


def release_freed_memory() -> None:
    """Collect cycles (a failed job's traceback holds its frames' arrays), then return every
    arena's free pages to the system."""
    gc.collect()
    return_freed_heap()
