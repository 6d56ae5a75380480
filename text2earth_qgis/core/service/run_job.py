"""Submit a job, follow it, cancel it on request, deliver its GeoTIFF. Stdlib only, blocking.

The dock's QgsTask and the Processing algorithm both call this from their worker threads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from ..candidates import Candidate, candidates_of
from ..contract.files import OutputFolderError, check_output_folder, unused_name
from ..failure_advice import job_message
from ..job_spec import is_pipeline_check, pipeline_check_name
from .client import (
    DeliveryError,
    EngineClient,
    EngineError,
    JobCancelled,
    JobFailed,
    ServiceError,
)


def progress_percent(status: dict) -> float:
    """0..100 over the whole job: every window's steps of a scene, not each window's alone."""
    steps = max(1, status.get("steps") or 1)
    tiles = max(1, status.get("tiles") or 1)
    done = (max(1, status.get("tile") or 1) - 1) * steps + (status.get("step") or 0)
    return min(100.0, 100.0 * done / (steps * tiles))


def status_text(status: dict) -> str:
    """One line for the user: state, step, window of a scene or tile of an edit, time left;
    before the first step, what the job waits for (the model loading or compiling)."""
    waiting = model_wait_text(status.get("waiting_for_model"))
    if waiting and status.get("state") == "running":
        return waiting
    steps, step = status.get("steps") or 0, status.get("step") or 0
    text = f"{status.get('state', '')}: step {step} of {steps}"
    if (status.get("tiles") or 1) > 1:
        text += f", tile {status.get('tile')} of {status.get('tiles')}"
    if status.get("queue_position"):
        text = f"queued (position {status['queue_position']})"
    if status.get("eta_s") is not None:
        text += f", about {duration(status['eta_s'])} left"
    return text


def model_wait_text(state: dict | None) -> str:
    """What a job waits for, from the engine's facts ({"phase", "seconds", "once"}: a status's
    ``waiting_for_model``, /health's ``model_state``), as 'loading the model, 6 s'; '' when it
    waits for nothing this plugin knows how to say."""
    if not isinstance(state, dict):
        return ""
    phase, once = state.get("phase"), state.get("once")
    if phase == "loading":
        what, why = "loading the model", ""
    elif phase == "compiling" and once is True:
        # The seconds before the why: a line cut at the dock's edge still shows them ticking.
        what, why = "compiling for this machine", " (first start only; a few minutes)"
    elif phase == "compiling" and once is False:
        what, why = "compiling from this machine's cache", ""
    elif phase == "compiling":
        what, why = "compiling the model for this machine", ""
    else:
        return ""
    seconds = state.get("seconds")
    if (isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
            and math.isfinite(seconds) and seconds >= 0):
        what += f", {duration(seconds)}"
    return what + why


def duration(seconds: float) -> str:
    """'40 s', '3 min', '1 h 20 min': as precise as a waiting user needs."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _with_advice(call, gpu: bool | None = None):
    """Run ``call``; a JobFailed or ServiceError carrying the engine's ``error_kind`` comes
    with the advice for that kind already in its message (and the kind kept on ``kind``);
    ``gpu`` False (the engine computes on the CPU): no GPU advice."""
    try:
        return call()
    except JobFailed as exc:
        if exc.kind is None:
            raise
        raise JobFailed(job_message(str(exc), exc.kind, gpu=gpu), exc.kind) from None
    except ServiceError as exc:
        if exc.kind is None:
            raise
        raise ServiceError(exc.status, job_message(exc.message, exc.kind, gpu=gpu),
                           exc.errors, exc.kind) from None


def check_folder(folder: str | Path) -> Path:
    """check_output_folder in the engine errors' terms (what the tasks and algorithms catch):
    a folder that cannot take the result fails before the job is sent, not after it ran."""
    try:
        return check_output_folder(folder)
    except OutputFolderError as exc:
        raise DeliveryError(str(exc)) from None


def run_job(
    client: EngineClient,
    job: dict,
    destination: str | Path,
    overwrite: bool = False,
    on_status: Callable[[dict], None] | None = None,
    is_canceled: Callable[[], bool] = lambda: False,
    on_preview: Callable[[bytes], None] | None = None,
    preview_every_s: float = 1.0,
    gpu: bool | None = None,
) -> tuple[dict, Path]:
    """(result, delivered path); raises JobCancelled, JobFailed, ServiceError, DeliveryError
    (the destination's folder cannot take a file: said before the job is sent), ...; ``gpu``
    is whether the engine computes on a GPU (EngineManager.gpu): its advice follows."""
    check_folder(Path(destination).parent)

    def run():
        job_id, result = _follow(client, job, on_status, is_canceled, on_preview,
                                 preview_every_s)
        return result, _deliver(client, job_id, result, destination, overwrite)

    return _with_advice(run, gpu)


def run_candidates(
    client: EngineClient,
    job: dict,
    paths_for: Callable[[list[Candidate], bool], list[Path]],
    on_status: Callable[[dict], None] | None = None,
    is_canceled: Callable[[], bool] = lambda: False,
    on_preview: Callable[[bytes], None] | None = None,
    preview_every_s: float = 1.0,
    folder: str | Path | None = None,
    gpu: bool | None = None,
) -> tuple[dict, list[tuple[Candidate, Path]], list[str]]:
    """One job of N variations: (result, [(candidate, delivered path)] best first, problems).

    ``paths_for(kept candidates, pipeline_check)`` names their files in ``folder``, which is
    checked before the job is sent (DeliveryError). A variation that cannot be delivered is
    said in ``problems``; the others still arrive."""
    if folder is not None:
        check_folder(folder)

    def run():
        job_id, result = _follow(client, job, on_status, is_canceled, on_preview,
                                 preview_every_s)
        listed = isinstance(result.get("candidates"), list) and bool(result["candidates"])
        kept = [c for c in candidates_of(result) if c.path or not listed]
        delivered, problems = [], []
        for candidate, path in zip(kept, paths_for(kept, is_pipeline_check(result)),
                                   strict=True):
            try:
                delivered.append((candidate, client.download(
                    job_id, path, False, candidate=candidate.index if listed else None)))
            except EngineError as exc:
                problems.append(f"variation {candidate.index}: {exc}")
        return result, delivered, problems

    return _with_advice(run, gpu)


def _follow(client, job, on_status, is_canceled, on_preview,
            preview_every_s) -> tuple[str, dict]:
    """Submit, follow to the end, honour a cancel: (job id, result)."""
    if is_canceled():
        raise JobCancelled("cancelled before the job was sent")
    job_id = client.submit(job)["id"]
    cancel_sent = False
    last_preview = 0.0

    def follow(status: dict) -> None:
        nonlocal cancel_sent, last_preview
        if on_status is not None:
            on_status(status)
        if is_canceled() and not cancel_sent:
            cancel_sent = True
            try:
                client.cancel(job_id)
            except ServiceError as exc:
                if exc.status != 409:  # 409: it just ended; the late-cancel branch below
                    raise
        now = time.monotonic()
        if on_preview is not None and status.get("step", 0) >= 1 and (
            now - last_preview >= preview_every_s or status.get("state") != "running"
        ):
            last_preview = now
            png = client.preview(job_id)
            if png:
                on_preview(png)

    result = client.wait(job_id, poll=0.5, on_progress=follow)
    if is_canceled():  # finished just as the user cancelled: honour the cancel, keep no file
        staged = {result.get("path") or ""} | {c.path or "" for c in candidates_of(result)}
        for name in staged - {""}:
            Path(name).unlink(missing_ok=True)
        raise JobCancelled("cancelled")
    return job_id, result


def _deliver(client, job_id: str, result: dict, destination, overwrite: bool) -> Path:
    destination = Path(destination)
    if is_pipeline_check(result):  # demo weights: the file name says so, whatever was asked
        name = pipeline_check_name(destination.name)
        if name != destination.name:
            folder = destination.parent
            destination = folder / (name if overwrite else unused_name(
                name, lambda n: (folder / n).exists()))
    return client.download(job_id, destination, overwrite)
