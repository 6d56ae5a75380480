"""Peak resident memory while some work runs (benchmarks and the memory test).

Sampled from /proc/self/statm: ru_maxrss would carry the parent's peak across fork + exec,
which hides what a child process itself needed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def resident_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_growth(work: Callable[[], object], every_s: float = 0.005) -> tuple[int, int]:
    """Run ``work``; (peak resident bytes during it, growth above the level before it)."""
    before = peak = resident_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident_bytes())
            done.wait(every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return peak, peak - before
