"""Jobs and the one worker that runs them in order on the device.

Pure bookkeeping: what a job is, its state machine, the queue and the thread. What running a
job means is the ``runner`` callable handed in (engine.service.runner).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL = (DONE, FAILED, CANCELLED)
KEEP_FINISHED = 500  # finished jobs remembered for status queries


class JobCancelledError(Exception):
    """Raised by a runner when it stopped because the job was cancelled."""


@dataclass
class Job:
    type: str
    request: Any  # what the runner needs (a GenerateRequest for "generate")
    steps: int
    out: str | None = None
    model: str | None = None  # None: the service's default model
    inpaint_model: str | None = None  # for scenes; None: lcybuaa/Text2Earth-inpainting
    precision: str | None = None  # None: the service's
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    state: str = QUEUED
    step: int = 0
    tile: int = 0
    tiles: int = 1
    error: str | None = None
    result: dict | None = None
    started: float | None = None  # monotonic
    finished: float | None = None
    preview_latents: Any = None  # latest latents (CPU numpy), for /preview
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    # Every change bumps the version and wakes long-polling readers: no busy polling needed.
    version: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    def touch(self, **changes: Any) -> None:
        with self.changed:
            for name, value in changes.items():
                setattr(self, name, value)
            self.version += 1
            self.changed.notify_all()

    def wait_for_change(self, since: int, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.version > since, timeout)

    def report_step(self, step: int, tile: int = 1, latents: Any = None,
                    tiles: int | None = None) -> None:
        if latents is not None:
            self.preview_latents = latents
        self.touch(step=step, tile=tile, tiles=tiles or self.tiles)

    def eta_s(self) -> float | None:
        done = (self.tile - 1) * self.steps + self.step
        total = self.tiles * self.steps
        if self.state != RUNNING or self.started is None or done <= 0:
            return None
        per_step = (time.monotonic() - self.started) / done
        return round(per_step * (total - done), 2)

    def status(self, queue_position: int | None = None) -> dict:
        if self.started is None:
            elapsed = 0.0
        else:
            elapsed = (self.finished or time.monotonic()) - self.started
        return {
            "id": self.id,
            "type": self.type,
            "state": self.state,
            "step": self.step,
            "steps": self.steps,
            "tile": self.tile,
            "tiles": self.tiles,
            "elapsed_s": round(elapsed, 3),
            "eta_s": self.eta_s(),
            "error": self.error,
            "queue_position": queue_position,
            "created": self.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "out": self.out,
            "version": self.version,
        }


class JobQueue:
    """Jobs run one at a time, in submission order, on a single worker thread."""

    def __init__(self, runner: Callable[[Job], dict]) -> None:
        self._runner = runner
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="text2earth-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._forget_old()
            self._lock.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        with self._lock:
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return None

    def status(self, job: Job) -> dict:
        return job.status(self.position(job))

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    @property
    def queue_length(self) -> int:
        with self._lock:
            return len(self._waiting)

    @property
    def running(self) -> Job | None:
        return self._running

    def cancel(self, job: Job) -> bool:
        """False when the job already ended. A running job stops at its next step."""
        with self._lock:
            if job.state in FINAL:
                return False
            job.cancel_requested.set()
            if job.state == QUEUED:
                self._waiting.remove(job)
                job.touch(state=CANCELLED, finished=time.monotonic())
            return True

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel what runs, drop what waits, let the worker clean up (temp files) and end."""
        with self._lock:
            self._stopping = True
            for job in list(self._waiting):
                job.touch(state=CANCELLED, finished=time.monotonic())
            self._waiting.clear()
            if self._running is not None:
                self._running.cancel_requested.set()
            self._lock.notify_all()
        self._thread.join(timeout)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINAL]
        for job in sorted(finished, key=lambda j: j.created)[:-KEEP_FINISHED]:
            del self._jobs[job.id]

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._waiting.popleft()
                self._running = job
                job.touch(state=RUNNING, started=time.monotonic())
            try:
                result = self._runner(job)
            except JobCancelledError:
                state, error, result = CANCELLED, None, None
            except Exception as exc:  # noqa: BLE001 - a job fails alone; the worker goes on
                state, error, result = FAILED, str(exc) or type(exc).__name__, None
            else:
                state, error = DONE, None
            with self._lock:
                self._running = None
                job.touch(result=result, error=error, state=state, finished=time.monotonic())
