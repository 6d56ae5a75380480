"""Issue 24, goal 2: while the service loads or compiles its model, /health and a waiting job's
status say so, with seconds that grow, and then that it is ready.

The server is the one `text2earth serve` runs (create_app, make_server, the background preload),
in this process on a loopback port with a tiny checkpoint, so that load_model and warm_up can
be slowed down here: each waits on a gate the test opens. Requests go through the plugin's
client, whose words for the wait are checked on the engine's own answers.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_service import job, wait_for

from engine.errors import CheckpointError
from engine.service import runner
from engine.service.app import create_app
from engine.service.job_queue import JobQueue
from engine.service.network import bind
from engine.service.runner import ModelManager, ServiceConfig, run_job
from engine.service.server import _preload, make_server
from text2earth_qgis.core.service.client import EngineClient, JobFailed
from text2earth_qgis.core.service.run_job import status_text

GATE_S = 60.0  # a gate never opened (a failed test) still lets the threads end
ONCE = "compiling for this machine, {} (first start only; a few minutes)"


class Service:
    """`serve`'s parts in this process: the app, the queue on the real runner, the preload."""

    def __init__(self, model: Path, out: Path) -> None:
        config = ServiceConfig(str(model), "cpu", [out], 10**8)
        self.models = ModelManager(config)
        self.queue = JobQueue(lambda job: run_job(job, self.models))
        sock = bind("127.0.0.1", 0)
        self.server = make_server(create_app(self.queue, self.models, config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 20, what="the loopback server to start")
        self.client = EngineClient(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=30)
        threading.Thread(target=_preload, args=(self.models,), daemon=True).start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.queue.stop()

    def model_state(self) -> dict:
        return self.client.health()["model_state"]


def park(tmp: Path) -> dict:
    """test_service's job, one quick step."""
    return job(str(tmp / "park.tif"), level=15, steps=1, seed=1)


@pytest.fixture
def gate():
    opened = threading.Event()
    yield opened
    opened.set()  # whatever happened, no thread stays blocked on it


@pytest.fixture
def start(tiny_t2i, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = []

    def make() -> Service:
        started.append(Service(tiny_t2i, tmp_path))
        return started[0]

    yield make
    for service in started:
        service.stop()


def waiting_status(client: EngineClient, job_id: str, phase: str) -> dict:
    def check():
        status = client.status(job_id)
        assert status["state"] in ("queued", "running"), status
        wait = status["waiting_for_model"]
        return status if wait and wait["phase"] == phase else None

    return wait_for(check, 30, what=f"job {job_id} to wait for {phase}")


def test_loading_is_reported_with_growing_seconds_then_ready(start, gate, monkeypatch,
                                                              tmp_path):
    real = runner.load_model

    def slow_load(**kwargs):
        gate.wait(GATE_S)
        return real(**kwargs)

    monkeypatch.setattr(runner, "load_model", slow_load)
    service = start()
    client = service.client
    first = wait_for(lambda: (s := service.model_state())["phase"] == "loading" and s, 20,
                     what="the preload to begin")
    assert first["once"] is None and first["seconds"] >= 0
    job_id = client.submit(park(tmp_path))["id"]
    status = waiting_status(client, job_id, "loading")
    # The worker took the job, which waits for the preload's model before its first step.
    assert status["state"] == "running" and status["step"] == 0
    time.sleep(0.5)
    later = client.status(job_id)["waiting_for_model"]
    health = service.model_state()
    assert later["phase"] == health["phase"] == "loading"
    assert later["seconds"] >= status["waiting_for_model"]["seconds"] + 0.4
    assert health["seconds"] >= first["seconds"] + 0.4
    assert client.health()["models"] == []  # not loaded yet, as before this field
    assert status_text(client.status(job_id)).startswith("loading the model, ")

    gate.set()
    result = client.wait(job_id, poll=0.5)
    assert Path(result["path"]).is_file()
    done = client.status(job_id)
    assert done["state"] == "done" and done["waiting_for_model"] is None
    ready = service.model_state()
    assert ready["phase"] == "ready" and ready["once"] is None and ready["seconds"] >= 0
    assert client.health()["models"][0]["model_id"]


@pytest.mark.parametrize("cached, once", [(False, True), (True, False)])
def test_compiling_says_whether_it_is_the_one_time_compile(start, gate, monkeypatch, tmp_path,
                                                           cached, once):
    real = runner.load_model
    warmed = []

    def compiled_load(**kwargs):
        loaded = real(**kwargs)  # fast: a tiny model; what follows is the compile's wait
        loaded.speed = {**(loaded.speed or {}), "compiled": True, "compile_cached": cached}
        return loaded

    def slow_warm_up(pipeline, *args, **kwargs):
        gate.wait(GATE_S)
        warmed.append(pipeline)

    monkeypatch.setattr(runner, "load_model", compiled_load)
    monkeypatch.setattr(runner, "warm_up", slow_warm_up)
    service = start()
    client = service.client
    first = wait_for(lambda: (s := service.model_state())["phase"] == "compiling" and s, 60,
                     what="the compile to begin")
    assert first["once"] is once
    job_id = client.submit(park(tmp_path))["id"]
    status = waiting_status(client, job_id, "compiling")
    assert status["waiting_for_model"]["once"] is once
    time.sleep(0.5)
    later = client.status(job_id)
    assert later["waiting_for_model"]["seconds"] >= status["waiting_for_model"]["seconds"] + 0.4
    text = status_text(later)
    shown = f"{later['waiting_for_model']['seconds']:.0f} s"
    if once:
        assert text == ONCE.format(shown)
    else:
        assert text == f"compiling from this machine's cache, {shown}"

    gate.set()
    client.wait(job_id, poll=0.5)
    assert len(warmed) == 1  # compiled once, by the preload; the job reused it
    ready = service.model_state()
    assert ready["phase"] == "ready" and ready["once"] is None
    assert client.status(job_id)["waiting_for_model"] is None


def test_a_load_that_fails_is_reported_and_fails_the_waiting_job(start, gate, monkeypatch,
                                                                 tmp_path):
    def broken_load(**kwargs):
        gate.wait(GATE_S)
        raise CheckpointError("could not load unet from /models/x: truncated file")

    monkeypatch.setattr(runner, "load_model", broken_load)
    service = start()
    client = service.client
    wait_for(lambda: service.model_state()["phase"] == "loading", 20,
             what="the preload to begin")
    job_id = client.submit(park(tmp_path))["id"]
    waiting_status(client, job_id, "loading")
    gate.set()
    with pytest.raises(JobFailed, match="truncated file"):
        client.wait(job_id, poll=0.5)
    health = client.health()
    assert health["model_state"]["phase"] == "failed"
    assert "truncated file" in health["model_error"]
    assert client.status(job_id)["waiting_for_model"] is None


def test_nothing_asked_for_yet_has_no_phase(tmp_path):
    config = ServiceConfig(str(tmp_path / "missing"), "cpu", [tmp_path], 10**6)
    queue = JobQueue(lambda job: {})
    try:
        app = create_app(queue, ModelManager(config), config)
        health = next(route.endpoint for route in app.routes
                      if getattr(route, "path", None) == "/health")()
    finally:
        queue.stop()
    assert health["model_state"] == {"phase": None, "seconds": None, "once": None}
