"""The service's pure parts, without a server: output paths, hosts, token, preview, queue."""

from __future__ import annotations

import io
import os
import stat
import threading
import time

import numpy as np
import pytest
from PIL import Image

from engine.errors import InputError
from engine.service.app import host_name
from engine.service.job_queue import (
    CANCELLED,
    DONE,
    FAILED,
    Job,
    JobCancelledError,
    JobQueue,
    QueueFull,
)
from engine.service.network import is_loopback
from engine.service.outputs import resolve_output
from engine.service.preview import latents_to_png
from engine.service.token import load_or_create_token


def test_output_paths_stay_inside_the_folders(tmp_path):
    first, second, outside = tmp_path / "a", tmp_path / "b", tmp_path / "elsewhere"
    for d in (first, second, outside):
        d.mkdir()
    dirs = [first, second]
    assert resolve_output("scene.tif", dirs, "abc") == first.resolve() / "scene.tif"
    assert resolve_output("sub/scene.tif", dirs, "abc") == first.resolve() / "sub/scene.tif"
    assert resolve_output(str(second / "x.tif"), dirs, "abc") == second.resolve() / "x.tif"
    auto = resolve_output(None, dirs, "0123456789")
    assert auto.parent == first.resolve() and auto.name.endswith("-01234567.tif")
    (first / "escape").symlink_to(outside)
    (first / "link.tif").symlink_to(outside / "victim.tif")
    for bad in ("../x.tif", "sub/../../x.tif", str(outside / "x.tif"), "/etc/passwd",
                "escape/x.tif", "link.tif", "~/x.tif"):
        with pytest.raises(InputError, match="outside"):
            resolve_output(bad, dirs, "abc")
    with pytest.raises(InputError, match="folder itself"):
        resolve_output(".", dirs, "abc")


@pytest.mark.parametrize(
    "header,name",
    [("127.0.0.1:8765", "127.0.0.1"), ("localhost", "localhost"), ("[::1]:80", "::1"),
     ("LocalHost.:1", "localhost"), ("evil.example:8765", "evil.example"), ("", ""),
     ("[::1]", "::1"), ("127.0.0.1.", "127.0.0.1"),
     # malformed: no name at all, so never a loopback one
     ("127.0.0.1:8765@evil.example", ""), ("[::1]evil.example", ""), ("[::1]:80@evil", ""),
     ("localhost:80:80", ""), ("127.0.0.1:80/x", ""), ("127.0.0.1 evil", ""),
     ("127.0.0.1:port", ""), ("[::1", ""), ("localhost..", ""), ("127.0.0.1:99999", ""),
     ("[evil.example]:80", ""), ("user@127.0.0.1", ""), ("127.0.0.1:", "")],
)
def test_host_header_parsing(header, name):
    assert host_name(header) == name


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("127.5.6.7") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert not is_loopback("example.org")


def test_token_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "dir" / "token"
    token = load_or_create_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_token(path) == token
    own = "my-own-token-Chosen-with-care-0123456789"
    path.write_text(own + "\n")
    assert load_or_create_token(path) == own


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
def test_token_file_readable_by_others_is_refused_with_the_fix(tmp_path, mode):
    path = tmp_path / "token"
    path.write_text("a-token-chosen-by-the-user-0123456789\n")
    path.chmod(mode)
    with pytest.raises(InputError) as info:
        load_or_create_token(path)
    message = str(info.value)
    assert str(path) in message and f"chmod 600 {path}" in message
    assert oct(mode)[2:] in message  # says what the mode is
    assert stat.S_IMODE(path.stat().st_mode) == mode  # left for the user to decide


@pytest.mark.parametrize("token", ["secret", "x" * 40, "0123456789abcdef", "abcabcabcabcabcab"
                                   "cabcabcabcabcabcabc", "has a space in it 0123456789abcdefg"])
def test_weak_or_malformed_token_is_refused(tmp_path, token):
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    with pytest.raises(InputError) as info:
        load_or_create_token(path)
    assert str(path) in str(info.value) and "delete" in str(info.value)


def test_preview_is_a_png_of_the_latents():
    latents = np.zeros((4, 32, 48), np.float32)
    latents[3] = -1.0  # channel 4 pushes towards blue-ish white in SD's latent space
    png = latents_to_png(latents)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    assert image.size == (256, 171)  # long side 256, aspect kept
    r, g, b = np.asarray(image.convert("RGB"))[50, 50]
    assert b > r  # -(-0.7177) on blue beats -(-0.2120) on red


def make_queue(runner):
    return JobQueue(runner)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_queue_runs_in_order_one_at_a_time_and_survives_failures():
    order, active, peak = [], [0], [0]
    lock = threading.Lock()

    def runner(job):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        order.append(job.request)
        with lock:
            active[0] -= 1
        if job.request == 2:
            raise RuntimeError("disk on fire")
        return {"n": job.request}

    queue = make_queue(runner)
    jobs = [queue.submit(Job("generate", i, steps=1)) for i in range(6)]
    assert queue.position(jobs[-1]) is not None
    assert wait_until(lambda: all(j.state in (DONE, FAILED) for j in jobs))
    assert order == list(range(6)) and peak[0] == 1
    assert [j.state for j in jobs] == [DONE, DONE, FAILED, DONE, DONE, DONE]
    assert jobs[2].error == "disk on fire" and jobs[3].result == {"n": 3}
    queue.stop()


def test_cancel_queued_and_running_jobs():
    started = threading.Event()

    def runner(job):
        started.set()
        while not job.cancel_requested.is_set():
            time.sleep(0.01)
        raise JobCancelledError()

    queue = make_queue(runner)
    running = queue.submit(Job("generate", "a", steps=5))
    waiting = queue.submit(Job("generate", "b", steps=5))
    assert started.wait(5)
    assert queue.cancel(waiting) and waiting.state == CANCELLED
    assert queue.cancel(running)
    assert wait_until(lambda: running.state == CANCELLED)
    assert not queue.cancel(running)  # already ended
    queue.stop()


def test_eta_follows_the_step_rate():
    job = Job("generate", None, steps=10)
    job.state = "running"
    job.started = time.monotonic() - 2.0
    assert job.eta_s() is None or job.step == 0
    job.report_step(4)
    assert job.eta_s() == pytest.approx(3.0, abs=0.2)  # 0.5 s a step, 6 to go


def test_model_manager_reuses_and_switches(tiny_t2i, tiny_sd2, tmp_path):
    import gc
    import weakref

    from engine.service.runner import ModelManager, ServiceConfig

    manager = ModelManager(ServiceConfig(str(tiny_t2i), "cpu", [tmp_path], 10**6))
    with pytest.raises(Exception, match="does not exist"):
        manager.get(str(tmp_path / "missing"))  # a miss ...
    first = manager.get()
    assert manager.get() is first and manager.get(str(tiny_t2i)) is first  # loaded once
    with pytest.raises(Exception, match="does not exist"):
        manager.get(str(tmp_path / "missing"))
    assert manager.get() is first  # ... costs no warm model
    first_unet = weakref.ref(first.pipeline.unet)
    del first
    second = manager.get(str(tiny_sd2))
    gc.collect()
    assert first_unet() is None  # the previous model is gone from memory
    assert manager.describe()[0]["model_id"] == str(tiny_sd2.resolve())
    assert not second.pipeline.has_level_embedding


def test_out_of_memory_on_gpu_retries_once_with_memory_saving(monkeypatch, tmp_path):
    import torch

    from engine.errors import OutOfMemoryError
    from engine.jobs.prepared import PreparedJob
    from engine.service import runner

    calls, saved = [], []

    class FakeModel:
        device = torch.device("cuda")
        pipeline_check = False

    class FakeManager:
        config = type("Config", (), {"model": None, "demo_fallback": False})()

        def load(self, checkpoint, demo=False, precision=None):
            return FakeModel()

        def waiting_for(self):
            return None

    def fake_run(job_setup, model, callback):
        calls.append(1)
        if len(calls) == 1:
            raise OutOfMemoryError("out of memory")
        raise RuntimeError("second attempt reached")

    setup = PreparedJob("generate", type("Request", (), {"pipeline_check": False})())
    monkeypatch.setattr(runner, "run_prepared", fake_run)
    monkeypatch.setattr(runner, "prepare", lambda request: setup)
    monkeypatch.setattr(runner, "choose_weights", lambda *args: None)
    monkeypatch.setattr(runner, "_save_memory", lambda model: saved.append(model))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    job = Job("generate", object(), steps=2)
    with pytest.raises(RuntimeError, match="second attempt"):
        runner.run_job(job, FakeManager())
    assert len(calls) == 2 and len(saved) == 1

    calls.clear()
    FakeModel.device = torch.device("cpu")  # on the CPU there is nothing to save: fail at once
    with pytest.raises(OutOfMemoryError):
        runner.run_job(job, FakeManager())
    assert len(calls) == 1


def test_listing_many_jobs_is_fast():
    """3000 queued jobs made GET /jobs take 12 s: each status looked its position up in the
    queue, comparing dataclasses field by field."""
    gate = threading.Event()
    queue = JobQueue(lambda job: gate.wait(30) and {}, max_queued=10**6)
    try:
        jobs = [queue.submit(Job("generate", {"i": i}, steps=50)) for i in range(5000)]
        began = time.monotonic()
        statuses = queue.statuses()
        assert time.monotonic() - began < 0.5
        assert [s["id"] for s in statuses] == [j.id for j in jobs]
        assert statuses[0]["queue_position"] is None  # the one running
        assert [s["queue_position"] for s in statuses[1:4]] == [1, 2, 3]
        assert statuses[-1]["queue_position"] == 4999
    finally:
        gate.set()
        queue.stop(5)


def test_queue_refuses_past_its_cap():
    gate = threading.Event()
    queue = JobQueue(lambda job: gate.wait(30) and {}, max_queued=3)
    try:
        first = queue.submit(Job("generate", None, steps=1))
        assert wait_until(lambda: first.state == "running")
        for _ in range(3):
            queue.submit(Job("generate", None, steps=1))
        with pytest.raises(QueueFull) as info:
            queue.submit(Job("generate", None, steps=1))
        assert "3 jobs" in str(info.value)
        assert queue.queue_length == 3
    finally:
        gate.set()
        queue.stop(5)


def test_finished_jobs_are_forgotten_on_a_timer_without_new_submissions():
    queue = JobQueue(lambda job: {}, keep_finished_s=0.3, trim_every_s=0.05)
    try:
        done = queue.submit(Job("generate", None, steps=1))
        assert wait_until(lambda: done.state == DONE)
        assert queue.get(done.id) is done  # still reported right after it ended
        assert wait_until(lambda: queue.get(done.id) is None, timeout=5)
    finally:
        queue.stop(5)


def test_failed_jobs_carry_a_stable_error_kind():
    from engine.errors import DiskFullError, ModelNotFoundError

    errors = iter([ModelNotFoundError("weights are not on this machine"),
                   DiskFullError("the disk is full"), KeyError("oops")])

    def runner(job):
        raise next(errors)

    queue = JobQueue(runner)
    try:
        jobs = [queue.submit(Job("generate", None, steps=1)) for _ in range(3)]
        assert wait_until(lambda: all(j.state == FAILED for j in jobs))
        assert [queue.status(j)["error_kind"] for j in jobs] == [
            "missing_model", "disk_full", "internal"]
    finally:
        queue.stop(5)


def test_async_waiters_wake_on_a_change_from_the_worker_thread():
    import asyncio

    job = Job("generate", None, steps=5)

    async def main():
        loop_began = time.monotonic()
        waiters = [asyncio.create_task(job.changed_since(job.version, 10)) for _ in range(200)]
        await asyncio.sleep(0.05)
        threading.Thread(target=job.report_step, args=(1,)).start()
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        return time.monotonic() - loop_began

    assert asyncio.run(main()) < 2.0
    assert job.step == 1

    async def times_out():
        began = time.monotonic()
        await job.changed_since(job.version, 0.2)
        return time.monotonic() - began

    assert 0.15 < asyncio.run(times_out()) < 2.0
    assert not job._waiters  # nobody left registered
