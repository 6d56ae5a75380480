"""The HTTP API (FastAPI): thin handlers over the job queue; guards against web pages."""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import urllib.parse
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from engine import __version__
from engine.errors import INTERNAL_KIND, GenerationCancelled, InputError, Text2EarthError
from engine.jobs.candidates import MAX_CANDIDATES
from engine.jobs.leftovers import resumable_scenes
from engine.model.checkpoint import check_folder, is_local_path
from engine.model.precision import check_precision
from engine.quality.rank_model import check_rank_folder
from engine.service import error_kinds as kinds
from engine.service.body_limit import MAX_BODY_BYTES, BodyLimit
from engine.service.demo_status import demo_weights_expected
from engine.service.device_report import device_report
from engine.service.job_bodies import generate_job, queued_progress, raster_job
from engine.service.job_queue import CANCELLED, DONE, FAILED, Job, JobQueue, QueueFull
from engine.service.outputs import open_output, resolve_output
from engine.service.preview import latents_to_png
from engine.service.runner import ModelManager, ServiceConfig, device_info
from engine.service.schemas import ERROR_ANSWERS, AnyJob, ErrorAnswer

API_VERSION = 1
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
BODY_METHODS = {"POST", "PUT", "PATCH"}
# A name (letters, digits, dots, hyphens; one trailing dot allowed) or a bracketed IPv6
# address, then at most a port. Anything else ('127.0.0.1:1@evil.example', '[::1]evil')
# is malformed and matches no name at all.
HOST_HEADER = re.compile(
    r"(?:\[(?P<ip6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)\.?)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def error(status: int, detail: str, kind: str, headers: dict | None = None,
          **extra) -> JSONResponse:
    """Every error answer: one sentence, and a stable ``error_kind`` for programs."""
    return JSONResponse({"detail": detail, "error_kind": kind, **extra}, status_code=status,
                        headers=headers)


def host_name(header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:8765' -> '::1', 'LocalHost.' -> 'localhost';
    '' for a malformed value."""
    match = HOST_HEADER.fullmatch(header.strip().lower())
    if match is None or (match["port"] and int(match["port"]) > 65535):
        return ""
    if match["ip6"] is not None:
        try:
            return str(ipaddress.IPv6Address(match["ip6"]))
        except ValueError:
            return ""
    if ".." in match["name"]:
        return ""
    return match["name"]


def allowed_methods(app: FastAPI, scope: dict) -> set[str]:
    """The methods the routes at this path answer (empty: no route has this path)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)  # PARTIAL: the path matches, the method does not
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


class HeadAsGet:
    """HEAD on a path that answers GET is that GET (HTTP says every GET resource takes HEAD);
    the server sends the headers only."""

    def __init__(self, app, routes_of: Callable[[dict], set[str]]) -> None:
        self.app = app
        self.routes_of = routes_of

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] == "http" and scope["method"] == "HEAD"
                and "GET" in self.routes_of({**scope, "method": "GET"})):
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


def answers(*statuses: int) -> dict:
    """OpenAPI entries for a route's own refusals, in the one error form."""
    text = {409: "the job has not finished, or has ended already", 410: "the output is gone",
            429: "the queue is full"}
    return {status: {"model": ErrorAnswer, "description": text[status]} for status in statuses}


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
        responses=ERROR_ANSWERS,  # every path may answer these, as {"detail", "error_kind"}
    )
    allowed_hosts = LOOPBACK_HOSTS | {bound_host.lower()}
    token_bytes = token.encode("utf-8") if token is not None else b""
    # With a token, a browser page cannot forge requests anyway; without one, only loopback
    # Host names are answered, so a DNS-rebound page gets nothing.
    any_host = token is not None and bound_host not in LOOPBACK_HOSTS

    # Inside the guard below: a body is read (at most MAX_BODY_BYTES) only once the Host,
    # the token and the method have passed.
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if not any_host and host_name(request.headers.get("host", "")) not in allowed_hosts:
            return error(403, "Host header not allowed: this service answers loopback names only",
                         kinds.FORBIDDEN_HOST)
        if token is not None:
            sent = request.headers.get("authorization", "")
            scheme, _, value = sent.partition(" ")
            # Bytes, since compare_digest refuses non-ASCII str (a 500 instead of a 401).
            given = value.strip().encode("utf-8", "surrogateescape")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given, token_bytes):
                return error(401, "missing or wrong token: send 'Authorization: Bearer <token>'",
                             kinds.UNAUTHORIZED)
        methods = allowed_methods(app, request.scope)
        if methods and request.method not in methods:
            return method_not_allowed(request.method, request.url.path, methods)
        if request.method in BODY_METHODS:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return error(415, "the request body must be JSON (Content-Type: application/json)",
                             kinds.UNSUPPORTED_MEDIA_TYPE)
        return await call_next(request)

    # Outermost: HEAD is GET without the body (uvicorn sends none), so the guard and the
    # routes see a GET.
    app.add_middleware(HeadAsGet, routes_of=lambda scope: allowed_methods(app, scope))

    def method_not_allowed(method: str, path: str, methods: set[str]) -> JSONResponse:
        methods = methods | ({"HEAD"} if "GET" in methods else set())
        served = sorted(methods - {"HEAD"}) or sorted(methods)
        return error(405, f"{method} is not supported on {path}: use {' or '.join(served)}",
                     kinds.METHOD_NOT_ALLOWED, headers={"Allow": ", ".join(sorted(methods))})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Still one JSON sentence, never a bare "Internal Server Error" page.
        return error(500, f"internal error: {type(exc).__name__}: {exc}", INTERNAL_KIND)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 405:
            return method_not_allowed(request.method, request.url.path,
                                      allowed_methods(app, request.scope) or {"GET"})
        kind = kinds.NOT_FOUND if exc.status_code == 404 else kinds.for_status(exc.status_code)
        return error(exc.status_code, str(exc.detail), kind, headers=exc.headers)

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
        return error(422, detail or "invalid request", InputError.kind, errors=errors)

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
            # {"phase": loading | compiling | ready | failed | None, "seconds", "once"}
            "model_state": models.phase.describe(),
            "max_pixels": config.max_pixels,  # the dock sizes outputs against this limit
            "demo_weights": demo_weights_expected(config.demo_fallback, config.model,
                                                  models.describe()),
            "queue_length": queue.queue_length,
            "running": running.id if running else None,
            # Stopped CLI scenes kept for a resume in the output folders (top level).
            "resumable_scenes": [scene.describe() for folder in config.output_dirs
                                 for scene in resumable_scenes(folder)],
        }

    @app.post("/jobs", status_code=202, responses=answers(429))
    def submit(body: AnyJob):
        job_id = uuid.uuid4().hex
        if body.type != "generate":
            try:
                out = resolve_output(body.out, config.output_dirs, job_id)
                check_precision(body.precision or config.precision, config.device)
                job_setup = raster_job(body, out, config)
                if body.model and is_local_path(body.model):
                    check_folder(Path(body.model).expanduser())
            except Text2EarthError as exc:
                return error(422, str(exc), exc.kind)
            steps = queued_progress(job_setup, None)
            job = Job(type=body.type, request=job_setup, steps=steps.steps, out=str(out),
                      model=body.model, id=job_id, precision=body.precision)
            job.tiles = steps.runs
            return enqueue(job)
        try:
            out = resolve_output(body.out, config.output_dirs, job_id)
            job_setup = generate_job(body, out, config)
            check_precision(body.precision or config.precision, config.device)
            for spec in (body.model, body.inpaint_model):
                if spec and is_local_path(spec):
                    check_folder(Path(spec).expanduser())  # a missing folder is a 422 now
            if body.rank_model and is_local_path(body.rank_model):
                check_rank_folder(Path(body.rank_model).expanduser())
        except Text2EarthError as exc:  # bad input, or a model folder that is not one
            return error(422, str(exc), exc.kind)
        steps = queued_progress(job_setup, body.inpaint_model)
        job = Job(type=body.type, request=job_setup, steps=steps.steps, out=str(out),
                  model=body.model, inpaint_model=body.inpaint_model, id=job_id,
                  precision=body.precision)
        job.tiles = steps.runs
        return enqueue(job, {"notes": list(job_setup.grid.notes)})  # the plan's warnings, now

    def enqueue(job: Job, extra: dict | None = None):
        try:
            queue.submit(job)
        except QueueFull as exc:
            return error(429, str(exc), kinds.QUEUE_FULL)
        return {**queue.status(job), **(extra or {})}

    @app.get("/jobs")
    def list_jobs() -> dict:
        return {"jobs": queue.statuses()}

    @app.get("/jobs/{job_id}")
    async def status(job_id: str, since: int | None = None,
                     wait_s: float = Query(0, ge=0, le=60)):
        """With ``since`` (a status's ``version``) and ``wait_s``, answer as soon as the job
        changes (a step, a state) or after ``wait_s`` seconds: progress without busy polling.
        Async: the wait is an await on the event loop and holds no worker thread."""
        job = find(job_id)
        if since is not None and wait_s > 0:
            await job.changed_since(since, wait_s)
        return queue.status(job)

    @app.delete("/jobs/{job_id}", responses=answers(409))
    def cancel(job_id: str):
        job = find(job_id)
        if not queue.cancel(job):
            return error(409, f"job {job_id} already ended ({job.state})", kinds.JOB_ENDED)
        return queue.status(job)

    @app.get("/jobs/{job_id}/preview")
    def preview(job_id: str):
        job = find(job_id)
        latents = job.preview_latents
        if latents is None:
            return error(404, f"no preview yet: job {job_id} is {job.state}", kinds.NOT_FOUND)
        return Response(latents_to_png(latents), media_type="image/png")

    @app.get("/jobs/{job_id}/result", responses=answers(409))
    def result(job_id: str):
        job = find(job_id)
        if job.state == DONE:
            return job.result
        if job.state == FAILED:
            return error(409, f"job {job_id} failed: {job.error}", job.error_kind or INTERNAL_KIND)
        if job.state == CANCELLED:
            return error(409, f"job {job_id} was cancelled; it has no result",
                         GenerationCancelled.kind)
        return error(409, f"job {job_id} is {job.state}; no result yet", kinds.NOT_READY)

    @app.get("/jobs/{job_id}/file", responses=answers(409, 410))
    def file(job_id: str, candidate: int | None = Query(None, ge=1, le=MAX_CANDIDATES)):
        """The finished GeoTIFF itself, for clients on another machine than the engine;
        ``candidate=K``: candidate K of a job with candidates, if it was kept."""
        job = find(job_id)
        if job.state != DONE:
            return error(409, f"job {job_id} is {job.state}; no file", kinds.NOT_READY)
        path, identity = job.result["path"], job.output_identity
        if candidate is not None:
            kept = getattr(job, "candidate_files", {})
            if candidate not in kept:
                return error(404, f"candidate {candidate} of job {job_id} was not written "
                             "(keep_candidates keeps them all)", kinds.NOT_KEPT)
            path, identity = kept[candidate]
        # Opened without following links, and only if it is still the very file the job
        # wrote, inside the output folders: a link or file planted there is never served.
        opened = open_output(path, identity, config.output_dirs)
        if opened is None:
            return error(410, f"the output of job {job_id} is no longer at {path} (moved, "
                         "deleted or replaced)", kinds.OUTPUT_GONE)
        fd, size = opened
        return StreamingResponse(read_chunks(fd), media_type="image/tiff", headers={
            "Content-Length": str(size),
            "Content-Disposition": attachment(os.path.basename(path)),
        })

    return app


def read_chunks(fd: int, size: int = 1 << 20):
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def attachment(name: str) -> str:
    quoted = urllib.parse.quote(name)
    if quoted != name:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{name}"'
