"""`text2earth serve`: bind, guard, load the model, serve until stopped."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from engine.errors import InputError
from engine.jobs.leftovers import remove_stale
from engine.service.app import create_app
from engine.service.http_protocol import JsonErrorsH11Protocol
from engine.service.job_queue import JobQueue
from engine.service.network import bind, check_host_and_token, write_port_file
from engine.service.outputs import default_output_dir
from engine.service.runner import ModelManager, ServiceConfig, run_job
from engine.service.token import load_or_create_token


def serve(args) -> int:
    check_host_and_token(args.host, args.token_file)
    token = load_or_create_token(args.token_file) if args.token_file else None
    output_dirs = [Path(d).expanduser() for d in (args.output_dir or [default_output_dir()])]
    for folder in output_dirs:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise InputError(f"output folder {folder} is not writable")
        # Temp files and non-resumable scratch of jobs killed with an earlier service.
        removed = remove_stale(folder, recursive=True)
        if removed:
            print(f"removed {len(removed)} stale temp file(s) of stopped jobs from {folder}",
                  file=sys.stderr, flush=True)
    config = ServiceConfig(args.model, args.device, output_dirs, args.max_pixels,
                           args.demo_fallback, args.precision, args.compile,
                           getattr(args, "rank_model", None))
    models = ModelManager(config)
    queue = JobQueue(lambda job: run_job(job, models))
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]

    stopped = []

    def shut_down() -> None:  # from the app's lifespan, and again below: runs once
        if stopped:
            return
        stopped.append(True)
        queue.stop()  # a running job is cancelled and removes its temp and scratch files
        if args.port_file:
            Path(args.port_file).unlink(missing_ok=True)
        print("service stopped", file=sys.stderr, flush=True)

    app = create_app(queue, models, config, token, args.host, on_shutdown=shut_down)

    # Load the model in the background: /health answers at once and reports it when ready.
    threading.Thread(target=_preload, args=(models,), daemon=True).start()
    server = make_server(app)
    host_for_url = f"[{args.host}]" if ":" in args.host else args.host
    print(f"listening on http://{host_for_url}:{port}", flush=True)
    if args.port_file:
        write_port_file(args.port_file, port)
    try:
        server.run(sockets=[sock])
    finally:
        shut_down()
    return 0


def make_server(app):
    """The uvicorn server `serve` runs: h11, whose own refusals answer in JSON too."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                         http=JsonErrorsH11Protocol))


def _preload(models: ModelManager) -> None:
    try:
        models.get()
    # Reported by /health (model_error) and by each job; not logged, so that the log tail of a
    # later crash is not read as this.
    except Exception:  # noqa: BLE001 # nosec B110
        pass

