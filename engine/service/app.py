"""The HTTP API (FastAPI): thin handlers over the job queue; guards against web pages."""

from __future__ import annotations

import hmac
import os
import secrets
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response

from engine import __version__
from engine.errors import Text2EarthError
from engine.jobs.generate import MAX_SEED, GenerateRequest, plan, scene_plan
from engine.jobs.leftovers import resumable_scenes
from engine.model.checkpoint import check_folder, is_local_path
from engine.model.precision import check_precision
from engine.service.device_report import device_report
from engine.service.edit_jobs import raster_request
from engine.service.job_queue import CANCELLED, DONE, FAILED, Job, JobQueue
from engine.service.outputs import resolve_output
from engine.service.preview import latents_to_png
from engine.service.runner import ModelManager, ServiceConfig, device_info
from engine.service.schemas import AnyJob

API_VERSION = 1
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
BODY_METHODS = {"POST", "PUT", "PATCH"}


def error(status: int, detail: str, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def host_name(header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:8765' -> '::1', 'LocalHost.' -> 'localhost'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") == 1 else header.rstrip(".")


def create_app(
    queue: JobQueue,
    models: ModelManager,
    config: ServiceConfig,
    token: str | None = None,
    bound_host: str = "127.0.0.1",
    on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # Here, not after server.run(): uvicorn re-raises SIGTERM once it has shut down,
        # which would end the process before any code after it ran.
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(
        title="Text2Earth engine",
        version=__version__,
        description="Local job service generating georeferenced synthetic imagery.",
        lifespan=lifespan,
    )
    allowed_hosts = LOOPBACK_HOSTS | {bound_host.lower()}
    token_bytes = token.encode("utf-8") if token is not None else b""
    # With a token, a browser page cannot forge requests anyway; without one, only loopback
    # Host names are answered, so a DNS-rebound page gets nothing.
    any_host = token is not None and bound_host not in LOOPBACK_HOSTS

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if not any_host and host_name(request.headers.get("host", "")) not in allowed_hosts:
            return error(403, "Host header not allowed: this service answers loopback names only")
        if token is not None:
            sent = request.headers.get("authorization", "")
            scheme, _, value = sent.partition(" ")
            # Bytes, since compare_digest refuses non-ASCII str (a 500 instead of a 401).
            given = value.strip().encode("utf-8", "surrogateescape")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given, token_bytes):
                return error(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
        if request.method in BODY_METHODS:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return error(415, "the request body must be JSON (Content-Type: application/json)")
        return await call_next(request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Still one JSON sentence, never a bare "Internal Server Error" page.
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = []
        for item in exc.errors():
            if item.get("type") == "json_invalid":
                errors.append({"field": "body", "message": "the body is not valid JSON "
                               f"({item.get('ctx', {}).get('error', 'syntax error')})"})
                continue
            location = [str(p) for p in item.get("loc", ()) if p != "body"]
            field = ".".join(location) or "body"
            message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
            errors.append({"field": field, "message": message})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return error(422, detail or "invalid request", errors=errors)

    def find(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")  # answered as {"detail": ...}
        return job

    @app.get("/health")
    def health() -> dict:
        running = queue.running
        return {
            "service": "text2earth",
            "version": __version__,
            "api_version": API_VERSION,
            "device": device_info(config.device),
            "device_report": device_report(config.device, models.last_oom),
            "pid": os.getpid(),  # lets a later plugin session recognise its leftover service
            "models": models.describe(),
            "model_error": models.error,
            "queue_length": queue.queue_length,
            "running": running.id if running else None,
            # Stopped CLI scenes kept for a resume in the output folders (top level).
            "resumable_scenes": [scene.describe() for folder in config.output_dirs
                                 for scene in resumable_scenes(folder)],
        }

    @app.post("/jobs", status_code=202)
    def submit(body: AnyJob):
        job_id = uuid.uuid4().hex
        if body.type != "generate":
            try:
                out = resolve_output(body.out, config.output_dirs, job_id)
                check_precision(body.precision or config.precision, config.device)
                request, windows = raster_request(body, out, config)
                if body.model and is_local_path(body.model):
                    check_folder(Path(body.model).expanduser())
            except Text2EarthError as exc:
                return error(422, str(exc))
            job = Job(type=body.type, request=request, steps=body.steps, out=str(out),
                      model=body.model, id=job_id, precision=body.precision)
            job.tiles = windows
            queue.submit(job)
            return queue.status(job)
        try:
            out = resolve_output(body.out, config.output_dirs, job_id)
            request = GenerateRequest(
                bbox=tuple(body.bbox), crs=body.crs, prompt=body.prompt, out=out,
                negative_prompt=body.negative_prompt, level=body.level,
                resolution=body.resolution, scale_denominator=body.scale, dpi=body.dpi,
                out_crs=body.out_crs,
                # Chosen now: reported at once, and the same seed for an out-of-memory retry.
                seed=body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1),
                steps=body.steps, guidance=body.guidance,
                scheduler=body.scheduler, overwrite=body.overwrite, max_pixels=config.max_pixels,
                allowed_dirs=tuple(config.output_dirs), tile=body.tile,
                overlap=body.overlap, scene_method=body.scene_method,
                regions=[r.model_dump() for r in body.regions] if body.regions else None,
                resume=False,  # service jobs are not resumed: a failed job's scratch goes
            )
            grid = plan(request)  # all that needs no model fails now, not in the queue
            check_precision(body.precision or config.precision, config.device)
            for spec in (body.model, body.inpaint_model):
                if spec and is_local_path(spec):
                    check_folder(Path(spec).expanduser())  # a missing folder is a 422 now
        except Text2EarthError as exc:  # bad input, or a model folder that is not one
            return error(422, str(exc))
        job = Job(type=body.type, request=request, steps=body.steps, out=str(out),
                  model=body.model, inpaint_model=body.inpaint_model, id=job_id,
                  precision=body.precision)
        windows = scene_plan(request, grid)
        if windows is not None and body.scene_method != "joint":
            job.tiles = windows.nx * windows.ny  # outpainted window by window: known now
        queue.submit(job)
        return {**queue.status(job), "notes": list(grid.notes)}  # the plan's warnings, now

    @app.get("/jobs")
    def list_jobs() -> dict:
        return {"jobs": [queue.status(j) for j in queue.all()]}

    @app.get("/jobs/{job_id}")
    def status(job_id: str, since: int | None = None, wait_s: float = Query(0, ge=0, le=60)):
        """With ``since`` (a status's ``version``) and ``wait_s``, answer as soon as the job
        changes (a step, a state) or after ``wait_s`` seconds: progress without busy polling."""
        job = find(job_id)
        if since is not None and wait_s > 0:
            job.wait_for_change(since, wait_s)
        return queue.status(job)

    @app.delete("/jobs/{job_id}")
    def cancel(job_id: str):
        job = find(job_id)
        if not queue.cancel(job):
            return error(409, f"job {job_id} already ended ({job.state})")
        return queue.status(job)

    @app.get("/jobs/{job_id}/preview")
    def preview(job_id: str):
        job = find(job_id)
        latents = job.preview_latents
        if latents is None:
            return error(404, f"no preview yet: job {job_id} is {job.state}")
        return Response(latents_to_png(latents), media_type="image/png")

    @app.get("/jobs/{job_id}/result")
    def result(job_id: str):
        job = find(job_id)
        if job.state == DONE:
            return job.result
        if job.state == FAILED:
            return error(409, f"job {job_id} failed: {job.error}")
        if job.state == CANCELLED:
            return error(409, f"job {job_id} was cancelled; it has no result")
        return error(409, f"job {job_id} is {job.state}; no result yet")

    @app.get("/jobs/{job_id}/file")
    def file(job_id: str):
        """The finished GeoTIFF itself, for clients on another machine than the engine."""
        job = find(job_id)
        if job.state != DONE:
            return error(409, f"job {job_id} is {job.state}; no file")
        path = job.result["path"]
        if not os.path.isfile(path):
            return error(410, f"the output of job {job_id} is no longer at {path}")
        return FileResponse(path, media_type="image/tiff", filename=os.path.basename(path))

    return app
