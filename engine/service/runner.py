"""What running a job means: the warm model, progress, cancel, and memory-saving retries."""

from __future__ import annotations

import gc
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import GenerationCancelled, ModelNotFoundError, OutOfMemoryError, Text2EarthError
from engine.jobs.edit.request import RasterResult
from engine.jobs.generate import GenerateResult
from engine.jobs.prepared import GENERATE, PreparedJob, choose_weights, prepare, use_demo_names
from engine.jobs.prepared import run as run_prepared
from engine.model.accelerate import warm_up
from engine.model.checkpoint import Checkpoint, LoadedModel, load_model, resolve_checkpoint
from engine.model.compile_cache import mark_compiled
from engine.model.demo import demo_checkpoint_dir
from engine.model.memory_release import release_freed_memory
from engine.service.job_queue import Job, JobCancelledError
from engine.service.model_phase import COMPILING, FAILED, LOADING, READY, ModelPhase, compile_once
from engine.service.outputs import file_identity

PREVIEW_LATENT_SIDE = 128  # previews of huge scenes are subsampled on the device first


@dataclass
class ServiceConfig:
    model: str | None
    device: str | None
    output_dirs: list[Path]
    max_pixels: int
    demo_fallback: bool = False
    precision: str | None = None  # jobs' default (None: auto); engine.model.precision
    compile: bool | None = None  # torch.compile the UNet (None: on CUDA only)
    rank_model: str | None = None  # serve --rank-model (None: engine.quality's default)

    def __post_init__(self) -> None:
        # Resolved once, now: later checks compare against these and never resolve them
        # again, so an output folder swapped for a link while serving leads nowhere.
        self.output_dirs = [Path(d).expanduser().resolve() for d in self.output_dirs]


class ModelManager:
    """One model at a time, loaded once and reused; asking for another unloads the first,
    but only once the new one is known to exist (a miss costs no warm model)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = None
        self._key: tuple | None = None
        self.error: str | None = None
        self.last_oom: str | None = None  # reported by /health's device_report
        self._rankers: dict[tuple, object] = {}  # Git-RSCLIP, warm like the model
        # Read by /health and by waiting jobs' statuses without the lock (held for the whole
        # load): each change replaces the value whole.
        self.phase = ModelPhase()

    def ranker(self, name: str | None = None):
        """The rank model a job scores with (engine.quality.rank_model.job_rank_model: asked
        for by the job or by serve --rank-model, else the default when local), or None."""
        from engine.quality.rank_model import OFF, job_rank_model, local_rank_model

        name = name or self.config.rank_model
        if name and name.strip().lower() in OFF:
            return None
        key = (name, self.config.device)
        with self._lock:
            if key not in self._rankers:
                if name is None and local_rank_model() is None:
                    return None  # not cached: one may be put in place while serving
                self._rankers = {key: job_rank_model(name, self.config.device or "auto")}
            return self._rankers[key]

    def get(self, model: str | None = None) -> LoadedModel:
        """The text-to-image model ``model`` (default: the service's), or the demo stand-in."""
        try:
            checkpoint, demo = resolve_checkpoint(model or self.config.model), False
        except ModelNotFoundError as exc:
            if not self.config.demo_fallback:
                self.error = str(exc)
                # A miss costs no warm model (that one stays ready), and says nothing over
                # another thread's load in progress.
                if self._loaded is None and not self.phase.waiting:
                    self.phase = ModelPhase.begin(FAILED)
                raise
            checkpoint, demo = resolve_checkpoint(str(demo_checkpoint_dir(False))), True
        return self.load(checkpoint, demo)

    def load(self, checkpoint: Checkpoint, demo: bool = False,
             precision: str | None = None) -> LoadedModel:
        # The same weights in another precision are another model.
        precision = precision or self.config.precision
        key = (str(checkpoint.path), self.config.device, precision or "auto")
        with self._lock:
            if self._loaded is not None and self._key == key:
                return self._loaded
            self._unload()
            self.phase = ModelPhase.begin(LOADING)
            try:
                try:
                    loaded = load_model(device=self.config.device, checkpoint=checkpoint,
                                        precision=precision, compile=self.config.compile)
                except Text2EarthError as exc:
                    self.error = str(exc)
                    raise
                loaded.pipeline_check = demo
                # Loading freed as much as it kept (files read, casts): back to the system
                # before the first job, whose peak adds to what stays resident.
                release_freed_memory()
                if loaded.speed and loaded.speed.get("compiled"):
                    # Compile the usual tile shapes now (under the lock: no job runs
                    # meanwhile), so the first job is not the slow one.
                    self.phase = ModelPhase.begin(COMPILING, compile_once(loaded.speed))
                    warm_up(loaded.pipeline)
                    if loaded.compile_key:  # the next start says "from this machine's cache"
                        mark_compiled(loaded.compile_key)
            except BaseException:
                self.phase = ModelPhase.begin(FAILED)
                raise
            self._loaded, self._key, self.error = loaded, key, None
            self.phase = ModelPhase.begin(READY)
            return loaded

    def waiting_for(self) -> dict | None:
        """The phase a job asking for the model now waits on (loading, compiling), else None."""
        phase = self.phase
        return phase.describe() if phase.waiting else None

    def _unload(self) -> None:
        if self._loaded is None:
            return
        device = self._loaded.device
        self._loaded = self._key = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> list[dict]:
        model = self._loaded
        if model is None:
            return []
        return [{
            "model_id": model.checkpoint.model_id,
            "weights_sha256": model.weights_sha256,
            "device": str(model.device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "precision": model.precision,
            "speed": model.speed,
            "pipeline_check": model.pipeline_check,
        }]


def device_info(device: str | None) -> dict:
    """What /health reports: the device jobs run on, its name and memory."""
    name = (device or "auto").lower()
    if torch.cuda.is_available() and (name == "auto" or name.startswith("cuda")):
        index = torch.device("cuda" if name == "auto" else name).index or 0
        free, total = torch.cuda.mem_get_info(index)
        return {"type": "cuda", "name": torch.cuda.get_device_name(index),
                "memory_total": total, "memory_free": free}
    mps = getattr(torch.backends, "mps", None)
    if name in ("auto", "mps") and mps is not None and mps.is_available():
        return {"type": "mps", "name": "Apple MPS", "memory_total": None, "memory_free": None}
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = free = None
    return {"type": "cpu", "name": f"CPU ({os.cpu_count()} cores)",
            "memory_total": total, "memory_free": free}


def _save_memory(model: LoadedModel) -> None:
    model.pipeline.enable_attention_slicing()
    model.pipeline.vae.enable_tiling()


def use_ranker(request, models) -> None:
    """The job's rank model (a manager without one, as in some tests, scores nothing)."""
    choose = getattr(models, "ranker", None)
    if choose is not None:
        request.ranker = choose(getattr(request, "rank_model", None))


def step_reporter(job: Job):
    """The step callback of a service job: progress, a preview, and cancel."""

    def on_step(pipe, step, timestep, tensors):
        latents = tensors["latents"][0].detach()
        stride = max(1, max(latents.shape[-2:]) // PREVIEW_LATENT_SIDE)
        job.report_step(step + 1, tensors.get("tile", 1),
                        latents[:, ::stride, ::stride].float().cpu().numpy(),  # a preview only
                        tensors.get("tiles", 1))
        if job.cancel_requested.is_set():
            pipe.cancel()
        return tensors

    return on_step


def run_job(job: Job, models: ModelManager) -> dict:
    """Any job on the warm model: its prepared plan (engine.jobs.prepared, made at submit;
    a bare request, or a raster job whose source must be opened on this thread, is prepared
    here), the checkpoint, the demo names, the run, and once more with memory savers after
    running out of GPU memory."""
    job_setup = job.request if isinstance(job.request, PreparedJob) else prepare(job.request)
    if job_setup.kind != GENERATE and job_setup.source is None:  # submitted on another thread
        job_setup = prepare(job_setup.request)
    with job_setup:
        return run_prepared_job(job, job_setup, models)


def run_prepared_job(job: Job, job_setup: PreparedJob, models: ModelManager) -> dict:
    request = job_setup.request
    # The service's --model is a text-to-image one: raster jobs default to inpainting.
    default = models.config.model if job_setup.kind == GENERATE else None
    choose_weights(job_setup, job.model or default, job.inpaint_model, None,
                   models.config.demo_fallback)
    job.touch(model_wait=models.waiting_for)  # the status says what the job waits for
    try:
        model = models.load(job_setup.checkpoint, job_setup.demo, job.precision)
    finally:
        job.touch(model_wait=None)
    if model.pipeline_check and not request.pipeline_check:
        use_demo_names(job_setup)  # checked before the work, not after
        job.out = str(request.out)
    if job.cancel_requested.is_set():  # cancelled while the model loaded
        raise JobCancelledError()

    use_ranker(request, models)
    on_step = step_reporter(job)
    try:
        try:
            result = run_prepared(job_setup, model, on_step)
        except OutOfMemoryError as exc:
            models.last_oom = str(exc)
            if model.device.type != "cuda":
                raise
            # Once more with attention slicing and VAE tiling before giving up.
            torch.cuda.empty_cache()
            _save_memory(model)
            job.step = 0
            result = run_prepared(job_setup, model, on_step)
    except GenerationCancelled:
        raise JobCancelledError() from None
    if job_setup.kind == GENERATE:
        return describe_result(job, result)
    return describe_raster_result(job, result)


def describe_result(job: Job, result: GenerateResult) -> dict:
    grid = result.grid
    job.output_identity = file_identity(result.path)  # /file serves this very file only
    # /file?candidate=K serves kept candidates under the same guard (engine.service.app).
    job.candidate_files = {c.index: (str(c.path), file_identity(c.path))
                           for c in result.candidates if c.path is not None}
    left, bottom, right, top = grid.bounds
    authority = grid.crs.to_authority()
    return {
        "id": job.id,
        "path": str(result.path),
        "bounds": [left, bottom, right, top],
        "crs_wkt": grid.crs.to_wkt(),
        "crs_authid": ":".join(authority) if authority else None,
        "width": grid.width,
        "height": grid.height,
        "level": grid.level,
        "level_choice": grid.level_choice.message,
        "ground_resolution_m": grid.ground_resolution,
        "notes": list(grid.notes),  # warnings from the plan (pixels far from square)
        "seed": result.seed,
        "tags": result.tags,
        "score": result.score,  # the output's Git-RSCLIP score (None: no rank model)
        "candidates": [c.entry() for c in result.candidates] or [
            {"index": 1, "seed": result.seed, "score": None, "path": str(result.path)}],
    }


def describe_raster_result(job: Job, result: RasterResult) -> dict:
    authority = result.crs.to_authority()
    job.output_identity = file_identity(result.path)  # /file serves this very file only
    return {
        "id": job.id,
        "path": str(result.path),
        "bounds": list(result.bounds),
        "crs_wkt": result.crs.to_wkt(),
        "crs_authid": ":".join(authority) if authority else None,
        "width": result.width,
        "height": result.height,
        "level": result.level,
        "seed": result.seed,
        "notes": result.notes,
        "tags": result.tags,
    }
