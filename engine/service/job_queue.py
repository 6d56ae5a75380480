"""Jobs and the one worker that runs them in order on the device.

Pure bookkeeping: what a job is, its state machine, the queue and the thread. What running a
job means is the ``runner`` callable handed in (engine.service.runner).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from engine.errors import INTERNAL_KIND, Text2EarthError
from engine.model.memory_release import release_freed_memory

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL = (DONE, FAILED, CANCELLED)
KEEP_FINISHED = 500  # finished jobs remembered for status queries, at most
KEEP_FINISHED_S = 24 * 3600.0  # and for at most this long after they ended
TRIM_EVERY_S = 60.0  # the worker forgets old jobs this often, submissions or not
# One device runs one job at a time: 100 jobs are hours of work; beyond that a client is
# looping, and every queued job costs memory and listing time.
MAX_QUEUED = 100


class JobCancelledError(Exception):
    """Raised by a runner when it stopped because the job was cancelled."""


class QueueFull(Exception):  # noqa: N818 - reads as the state it reports
    """The queue holds MAX_QUEUED jobs already; the service answers 429."""


# eq=False: jobs are compared by identity (deque.remove / index compared every field).
@dataclass(eq=False)
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
    error_kind: str | None = None  # engine.errors kinds, INTERNAL_KIND for a bug
    result: dict | None = None
    output_identity: tuple[int, ...] | None = None  # engine.service.outputs.file_identity
    started: float | None = None  # monotonic
    finished: float | None = None
    preview_latents: Any = None  # latest latents (CPU numpy), for /preview
    # While the job waits for its model: asked at each status for what it waits on (the
    # runner's ModelManager.waiting_for: {"phase", "seconds", "once"} or None).
    model_wait: Callable[[], dict | None] | None = field(default=None, repr=False)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    # Every change bumps the version and wakes long-polling readers: no busy polling needed.
    version: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)
    # Long-polls waiting on the event loop: (loop, event), set from the worker thread.
    _waiters: set = field(default_factory=set, repr=False)

    def touch(self, **changes: Any) -> None:
        with self.changed:
            for name, value in changes.items():
                setattr(self, name, value)
            self.version += 1
            self.changed.notify_all()
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed: nobody is waiting there any more
                pass

    def wait_for_change(self, since: int, timeout: float) -> None:
        """Blocking form, for threads (it holds one while it waits)."""
        with self.changed:
            self.changed.wait_for(lambda: self.version > since, timeout)

    async def changed_since(self, since: int, timeout: float) -> None:
        """Until the version passes ``since`` or ``timeout`` s: an await on the event loop, so
        an open long-poll holds no thread (a thread each starved the server at 40)."""
        loop = asyncio.get_running_loop()
        waiter = (loop, asyncio.Event())
        with self.changed:
            if self.version > since:
                return
            self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter[1].wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self.changed:
                self._waiters.discard(waiter)

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
        model_wait = self.model_wait  # once: the worker clears it when the model is there
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
            "error_kind": self.error_kind,
            "queue_position": queue_position,
            "created": self.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "out": self.out,
            "version": self.version,
            "waiting_for_model": model_wait() if model_wait is not None else None,
        }


class JobQueue:
    """Jobs run one at a time, in submission order, on a single worker thread."""

    def __init__(self, runner: Callable[[Job], dict], max_queued: int = MAX_QUEUED,
                 keep_finished: int = KEEP_FINISHED, keep_finished_s: float = KEEP_FINISHED_S,
                 trim_every_s: float = TRIM_EVERY_S) -> None:
        self._runner = runner
        self.max_queued = max_queued
        self._keep_finished = keep_finished
        self._keep_finished_s = keep_finished_s
        self._trim_every_s = trim_every_s
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="text2earth-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        """Queue ``job``; QueueFull when ``max_queued`` jobs wait already."""
        with self._lock:
            if len(self._waiting) >= self.max_queued:
                raise QueueFull(
                    f"the queue is full ({self.max_queued} jobs waiting): wait for some to "
                    "finish, or cancel some, before submitting more"
                )
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

    def statuses(self) -> list[dict]:
        """Every job's status, oldest first: positions found in one pass, not one per job."""
        with self._lock:
            jobs = list(self._jobs.values())  # insertion order: submission order
            positions = {id(job): i for i, job in enumerate(self._waiting, 1)}
        return [job.status(positions.get(id(job))) for job in jobs]

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
        """Drop finished jobs past the count or the age limit (called under the lock)."""
        finished = sorted((j for j in self._jobs.values() if j.state in FINAL),
                          key=lambda j: j.created)
        cutoff = time.monotonic() - self._keep_finished_s
        excess = len(finished) - self._keep_finished
        for i, job in enumerate(finished):
            if i < excess or (job.finished is not None and job.finished < cutoff):
                del self._jobs[job.id]

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stopping:
                    # Wake now and then to forget old jobs even when nobody submits.
                    if not self._lock.wait(self._trim_every_s):
                        self._forget_old()
                if self._stopping:
                    return
                job = self._waiting.popleft()
                self._running = job
                job.touch(state=RUNNING, started=time.monotonic())
            try:
                result = self._runner(job)
            except JobCancelledError:
                state, error, result, kind = CANCELLED, None, None, None
            except Exception as exc:  # noqa: BLE001 - a job fails alone; the worker goes on
                state, error, result = FAILED, str(exc) or type(exc).__name__, None
                kind = exc.kind if isinstance(exc, Text2EarthError) else INTERNAL_KIND
            else:
                state, error, kind = DONE, None, None
            with self._lock:
                self._running = None
                job.touch(result=result, error=error, error_kind=kind, state=state,
                          finished=time.monotonic())
                self._forget_old()
            del job, result  # nothing of the job but its status is kept past here
            release_freed_memory()
