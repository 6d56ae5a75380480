"""Confuse 4: a local engine killed mid-job. The manager sees that its process exited, says
"crashed" with the log's cause and offers a restart; no advice about an engine URL the user
never gave, no GPU advice for an engine on the CPU, and a job's failure is not re-read as
another cause. The engine is a real process (the fake service of tests/fake_service.py)
killed with SIGKILL, as `kill -9` does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from text2earth_qgis.core.failure_advice import JOB, SERVICE, explain, job_message
from text2earth_qgis.core.service.client import (
    EngineClient,
    JobFailed,
    LocalService,
    ServiceNotRunning,
)
from text2earth_qgis.core.service.engine_manager import (
    CONNECTED,
    CRASHED,
    FAILED,
    EngineManager,
    EngineSettings,
    log_cause,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
TESTS = Path(__file__).resolve().parent
SERVE = (
    "import sys, time; sys.path.insert(0, sys.argv[1]);"
    "from fake_service import FakeService;"
    "s = FakeService(sys.argv[2]).__enter__(); print(s.url, flush=True);"
    "print('listening on', s.url, file=sys.stderr, flush=True);"
    "time.sleep(600)"
)


@pytest.fixture()
def engine(tmp_path):
    """A manager that started a local engine: its process, log and client."""
    log_path = tmp_path / "service.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", SERVE, str(TESTS), str(tmp_path)],
                                   stdout=subprocess.PIPE, stderr=log, text=True)
    url = process.stdout.readline().strip()
    client = EngineClient(url)
    manager = EngineManager(EngineSettings())
    manager._service = LocalService(process, url, client, log_path)
    manager._client = client
    manager._note_health(client.health())
    yield manager, process
    if process.poll() is None:
        process.kill()
        process.wait()


def kill_9(process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


def test_a_killed_engine_shows_as_crashed_with_restart_and_no_gpu_advice(engine):
    manager, process = engine
    assert manager.state == CONNECTED and manager.gpu is False  # /health: a CPU
    assert manager.check_alive() is False  # alive: nothing changes
    kill_9(process)
    assert process.returncode == -signal.SIGKILL
    assert manager.check_alive() is True
    assert manager.state == CRASHED and manager.client is None
    assert manager.message.startswith("crashed: The engine was killed")
    assert manager.message.endswith("(the log's last error: listening on "
                                    f"{manager.last_log.split()[-1]})")
    assert "GPU" not in manager.message and "engine URL" not in manager.message
    # A job that was running when the engine died gets the same cause, not the client's
    # "not answering ... check the engine URL", and not a GPU out-of-memory reading.
    error = manager.lost_contact("the Text2Earth engine at http://127.0.0.1:1 is not "
                                 "answering (refused): start it, or check the engine URL")
    assert error.startswith("The engine was killed") and "Restart" in error
    assert job_message(error, gpu=manager.gpu) == error
    assert "GPU" not in job_message(error)  # said once, never re-read as a GPU failure
    assert manager.check_alive() is False  # once


def test_a_job_that_loses_a_local_engine_first_finds_it_dead(engine):
    """No watch ran between the kill and the job's failure: lost_contact looks itself."""
    manager, process = engine
    kill_9(process)
    error = manager.lost_contact("not answering")
    assert manager.state == CRASHED and error.startswith("The engine was killed")


def test_url_advice_only_for_an_engine_url_the_user_gave(tmp_path):
    remote = EngineManager(EngineSettings(url="http://10.0.0.5:8765"))
    try:
        EngineClient("http://127.0.0.1:9").health()
    except ServiceNotRunning as exc:
        told = remote.lost_contact(str(exc))
    assert "engine URL" in told and remote.state == FAILED
    assert "10.0.0.5" in remote.message


def test_a_local_engine_that_stops_answering_is_stopped_and_said_in_plain_words(engine):
    manager, process = engine
    assert process.poll() is None  # alive, but (say) hung: the job lost it all the same
    error = manager.lost_contact("not answering, check the engine URL")
    assert process.wait(15) is not None  # stopped, not left running unowned
    assert manager.state == FAILED and "engine URL" not in error
    assert "Connect" in error


def test_gpu_advice_only_for_an_engine_on_a_gpu():
    oom = "RuntimeError: out of memory"
    assert explain(oom, SERVICE, gpu=True).problem == "The GPU ran out of memory."
    cpu = explain(oom, SERVICE, gpu=False)
    assert "GPU" not in cpu.message() and cpu.kind == "out_of_memory"
    assert "GPU" not in job_message("out of memory at step 3", "out_of_memory", gpu=False)
    assert "GPU" not in job_message(oom, gpu=False)
    assert explain(oom, JOB).problem == "The GPU ran out of memory."  # unknown: as before


def test_the_log_cause_is_its_last_error_line():
    tail = "loading\nTraceback (most recent call last):\n  File x\nMemoryError: cannot allocate\n"
    assert log_cause(tail) == "MemoryError: cannot allocate"
    assert log_cause("listening on http://127.0.0.1:5\n") == "listening on http://127.0.0.1:5"
    assert log_cause("") == ""


class _FailingClient:
    """A service whose job ends out of memory with the engine's error_kind, as the engine
    reports it."""

    def submit(self, job):
        return {"id": "j1"}

    def wait(self, job_id, poll=1.0, timeout=None, on_progress=None):
        raise JobFailed("CPU out of memory: tried to allocate 3.5 GiB", "out_of_memory")


def test_a_cpu_engines_out_of_memory_reaches_the_user_without_gpu_advice(tmp_path):
    from text2earth_qgis.core.service.run_job import run_job

    with pytest.raises(JobFailed) as cpu:
        run_job(_FailingClient(), {"prompt": "x"}, tmp_path / "out.tif", gpu=False)
    assert "GPU" not in str(cpu.value) and "memory" in str(cpu.value)
    # The dock's task words it again with the device: the advice stays the CPU's.
    assert "GPU" not in job_message(str(cpu.value), gpu=False)
    with pytest.raises(JobFailed) as gpu:
        run_job(_FailingClient(), {"prompt": "x"}, tmp_path / "out.tif", gpu=True)
    assert str(gpu.value).startswith("The GPU ran out of memory")


def test_before_the_engine_said_its_device_a_machine_without_a_driver_is_cpu_only(
        monkeypatch):
    from text2earth_qgis.core.service import engine_manager as em

    monkeypatch.setattr(em.sys, "platform", "linux")
    monkeypatch.setattr(em, "detect_nvidia_driver", lambda: None)
    assert em.EngineManager(em.EngineSettings()).gpu is False
    monkeypatch.setattr(em, "detect_nvidia_driver", lambda: "580.65.06")
    assert em.EngineManager(em.EngineSettings()).gpu is None  # a GPU may be used
    assert em.EngineManager(em.EngineSettings(url="http://10.0.0.5:8000")).gpu is None
