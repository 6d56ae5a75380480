"""Engine failures provoked for real and the one message each gives: an occupied port, a
leftover service of an earlier session (reused), a killed service (crash, restart), no GPU
driver, a missing model, out of memory; and the diagnostics text for a bug report."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

from text2earth_qgis.core.diagnostics import REDACTED, diagnostics_text, engine_facts
from text2earth_qgis.core.failure_advice import JOB, SERVICE, explain, job_message
from text2earth_qgis.core.service import service_record
from text2earth_qgis.core.service.client import EngineClient, read_token
from text2earth_qgis.core.service.engine_manager import (
    CONNECTED,
    CRASHED,
    EngineManager,
    EngineSettings,
)


def settings(tmp_path, **kw) -> EngineSettings:
    values = dict(python=sys.executable, model="lcybuaa/Text2Earth", device=None,
                  token_file=str(tmp_path / "token"), staging_dir=str(tmp_path / "staging"),
                  demo_fallback=False, record_file=str(tmp_path / "service.json"),
                  model_cache=str(tmp_path / "empty-cache"), start_timeout=120)
    values.update(kw)
    return EngineSettings(**values)


def test_port_leftover_crash_restart_driver_and_missing_model(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)  # another program holds the port the user configured
    port = taken.getsockname()[1]
    first = EngineManager(settings(tmp_path, port=port))
    second = None
    try:
        client = first.ensure_running()
        assert first.state == CONNECTED and int(client.url.rsplit(":", 1)[1]) != port
        assert f"port {port} is used by another program" in first.message
        pid = first._service.process.pid
        record = service_record.read_record(tmp_path / "service.json")
        assert record.pid == pid and record.url == client.url

        # The engine's environment is where the model cache setting arrived.
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"HF_HUB_CACHE={tmp_path / 'empty-cache'}".encode() in environ

        # No GPU driver on this machine: /health says the GPU is not used, and why; the
        # status line the dock shows gives no GPU advice on a machine without one.
        report = client.health()["device_report"]
        assert report["gpu_used"] is torch.cuda.is_available()
        if shutil.which("nvidia-smi") is None:
            assert report["reason"] == "no NVIDIA driver found"
            assert "GPU" not in first.message and "NVIDIA" not in first.message
        auto = service_record.read_record(tmp_path / "service.json")  # unchanged
        assert auto == record

        # The model is missing (an empty cache, offline): /health's model_error -> advice.
        deadline = time.monotonic() + 60
        while not client.health().get("model_error") and time.monotonic() < deadline:
            time.sleep(0.2)
        advice = explain(client.health()["model_error"], SERVICE)
        assert advice.kind == "model_missing" and "Download model" in advice.action

        # A new QGIS session finds the leftover service: ours (token, pid) and healthy.
        second = EngineManager(settings(tmp_path, port=port))
        reused = second.ensure_running()
        assert reused.url == client.url and second._service is None
        assert "reusing the engine left running by an earlier session" in second.message
        # Someone else's token: not ours, so not reused (and the record is dropped).
        stranger = service_record.find_leftover(tmp_path / "service.json", "wrong-token")
        assert stranger[0] is None and "does not answer as ours" in stranger[1]
        service_record.write_record(tmp_path / "service.json", record)

        # The service dies: one message, its last log lines, and a restart that works.
        os.kill(pid, signal.SIGKILL)
        first._service.process.wait(30)
        with pytest.raises(Exception) as crashed:
            first.ensure_running()
        assert first.state == CRASHED
        assert str(crashed.value).startswith("The engine was killed")
        assert "listening on http://127.0.0.1:" in str(crashed.value)  # the log's last lines
        assert "listening on" in first.log_tail()
        with pytest.raises(Exception, match="stopped unexpectedly"):
            second.ensure_running()  # the adopted one is gone as well
        restarted = first.ensure_running()
        assert first.state == CONNECTED and restarted.health()["pid"] != pid
    finally:
        taken.close()
        first.stop()
        if second is not None:
            second.stop()
    assert not (tmp_path / "service.json").exists()


def test_a_fixed_free_port_is_used_and_a_busy_one_in_the_log_is_explained(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert service_record.choose_port(free) == (free, "")
    assert service_record.choose_port(0) == (0, "")
    # What the engine itself says when its port is taken (engine.service.network.bind).
    from engine.errors import InputError
    from engine.service.network import bind

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(InputError) as busy:
            bind("127.0.0.1", taken.getsockname()[1])
    assert explain(str(busy.value), SERVICE).kind == "port_in_use"


def test_out_of_memory_is_reported_by_health_and_explained(tiny_t2i, tmp_path, monkeypatch):
    from engine.jobs.generate import GenerateRequest
    from engine.service.device_report import device_report, gpu_report
    from engine.service.job_queue import Job
    from engine.service.runner import ModelManager, ServiceConfig, run_job

    config = ServiceConfig(str(tiny_t2i), "cpu", [tmp_path], 10**8)
    models = ModelManager(config)
    request = GenerateRequest(bbox=(447000, 5411000, 447300, 5411300), crs="EPSG:32632",
                              prompt="farmland", out=tmp_path / "x.tif", level=17, seed=1,
                              steps=2, allowed_dirs=(tmp_path,))
    job = Job("generate", request, steps=2)

    def out_of_memory(*args, **kwargs):  # the allocator fails inside the denoising loop
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(job, "report_step", out_of_memory)
    with pytest.raises(Exception) as failed:
        run_job(job, models)
    assert explain(str(failed.value), JOB).kind == "out_of_memory"
    assert job_message(str(failed.value)).startswith("The GPU ran out of memory. Choose a "
                                                     "smaller extent")
    assert job_message("the engine at http://x is not answering") == \
        "the engine at http://x is not answering"  # unknown causes are left as they are
    assert models.last_oom == str(failed.value) and not (tmp_path / "x.tif").exists()
    report = device_report("cpu", models.last_oom)
    assert report["last_oom"] == str(failed.value)
    # Each reason the GPU is not used, from the facts (no GPU here to provoke them all).
    assert gpu_report("auto", False, None, None)["reason"].startswith("no NVIDIA driver")
    cpu_only = gpu_report("auto", False, None, "580.65.06")
    assert "CPU-only build" in cpu_only["reason"] and "Set up engine" in cpu_only["reason"]
    assert "update the driver" in gpu_report("auto", False, "13.0", "470.1")["reason"]
    used = gpu_report("auto", True, "13.0", "580.65.06", last_oom="out of memory on cuda")
    assert used["gpu_used"] is True and "ran out of GPU memory" in used["reason"]


def test_diagnostics_carry_the_facts_but_never_the_token(tmp_path):
    token = "s3cret-token-value-123"
    manager = EngineManager(settings(tmp_path, python=str(tmp_path / "no-python")))
    manager.health = {"version": "0.1.0", "device": {"type": "cpu", "name": "CPU (2 cores)"},
                      "device_report": {"gpu_used": False, "reason": "no NVIDIA driver found"},
                      "model_error": "weights missing"}
    manager.last_log = f"Authorization: Bearer {token}\nTraceback: boom"
    facts = engine_facts(manager) | {"plugin_version": "0.1.0", "qgis_version": "3.22"}
    text = diagnostics_text(facts, secrets=[token])
    assert token not in text and REDACTED in text
    for expected in ("plugin: 0.1.0", "QGIS: 3.22", "GPU note: no NVIDIA driver found",
                     "model error: weights missing", "Traceback: boom",
                     f"model cache: {tmp_path / 'empty-cache'}",
                     f"QGIS Python: {sys.version.split()[0]}"):
        assert expected in text, expected
    assert read_token(tmp_path / "token") is None and EngineClient  # nothing was started


def test_an_engine_python_missing_packages_is_sent_to_set_up(tmp_path):
    bare = shutil.which("python3", path="/usr/bin") or sys.base_prefix + "/bin/python3"
    manager = EngineManager(settings(tmp_path, python=bare, start_timeout=60))
    with pytest.raises(Exception) as failed:
        manager.ensure_running()
    assert manager.state == "failed"
    assert manager.message.startswith("The engine's environment is incomplete. Run Set up "
                                      "engine…")
    assert "No module named" in str(failed.value)  # the log's own line comes along
