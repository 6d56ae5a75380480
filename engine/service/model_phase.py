"""Where the service's model is on its way to a first job: loading, compiling, ready or failed,
and since when. The facts only; the plugin words them (text2earth_qgis.core.service.run_job).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

LOADING, COMPILING, READY, FAILED = "loading", "compiling", "ready", "failed"
WAITING = (LOADING, COMPILING)  # a job asking for the model now waits


@dataclass(frozen=True)
class ModelPhase:
    """One phase, replaced whole at each change: a reader that takes the reference once sees
    a consistent phase without the manager's lock (held for the whole load)."""

    phase: str | None = None  # None: no model asked for yet
    since: float | None = None  # time.monotonic() when the phase began
    # Compiling only: True when this is the machine's one-time compile (minutes), False when
    # the on-disk compile cache is reused (seconds); None when not known or not compiling.
    once: bool | None = None

    @classmethod
    def begin(cls, phase: str, once: bool | None = None) -> ModelPhase:
        return cls(phase, time.monotonic(), once)

    @property
    def waiting(self) -> bool:
        return self.phase in WAITING

    def describe(self, now: float | None = None) -> dict:
        """{"phase", "seconds" (in this phase so far), "once"}: /health's ``model_state``."""
        if self.since is None:
            seconds = None
        else:
            seconds = round((time.monotonic() if now is None else now) - self.since, 1)
        return {"phase": self.phase, "seconds": seconds, "once": self.once}


def compile_once(speed: dict | None) -> bool | None:
    """Whether a compiled model's warm-up is this machine's one-time compile, from its speed
    report's ``compile_cached`` (engine.model.accelerate.SpeedReport); None: not known."""
    cached = (speed or {}).get("compile_cached")
    return None if cached is None else not cached
