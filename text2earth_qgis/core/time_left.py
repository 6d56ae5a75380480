"""Time left of a job, from the engine's own step timings, shown only once it settles. Stdlib.

The first steps of a run are slow (warm-up, compilation, caches), so the engine's early
estimates swing by minutes; a user reads such a swing as a fault. The estimate is smoothed
and appears only after a few steps whose estimates agree.
"""

from __future__ import annotations


class TimeLeft:
    def __init__(self, min_updates: int = 3, weight: float = 0.3, tolerance: float = 0.25,
                 agreeing: int = 2) -> None:
        self.min_updates, self.weight = min_updates, weight
        self.tolerance, self.agreeing = tolerance, agreeing
        self.smoothed: float | None = None
        self.last: float | None = None
        self.updates = 0
        self.agreed = 0
        self.stable = False

    def update(self, eta_s: float | None) -> float | None:
        """Feed the engine's latest estimate; the seconds to show, or None (not yet)."""
        if eta_s is None:
            return self.smoothed if self.stable else None
        eta_s = float(eta_s)
        self.updates += 1
        previous, self.last = self.last, eta_s
        close = previous is not None and abs(eta_s - previous) <= self.tolerance * max(
            previous, 1.0)
        self.agreed = self.agreed + 1 if close else 0
        if self.stable:
            self.smoothed = self.weight * eta_s + (1 - self.weight) * self.smoothed
        elif self.updates >= self.min_updates and self.agreed >= self.agreeing:
            self.stable, self.smoothed = True, eta_s  # consecutive estimates agree: settled
        return self.smoothed if self.stable else None
