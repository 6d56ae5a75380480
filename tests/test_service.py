"""`text2earth serve`: the local job service, end to end on loopback with tiny checkpoints.

Real service processes (started with the plugin's own client) on free ports; jobs go through
the client, hostile requests through raw http.client; outputs are checked with rasterio.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import rasterio
from PIL import Image
from pyproj import CRS

import engine
from text2earth_qgis.core.service.client import (
    EngineClient,
    JobCancelled,
    JobFailed,
    ServiceError,
    ServiceNotRunning,
    ServiceStartError,
    start_local_service,
)

ROOT = Path(__file__).resolve().parents[1]
BBOX = (447000.0, 5411000.0, 447300.0, 5411300.0)  # 300 m x 300 m near Karlsruhe, UTM 32N
UTM = "EPSG:32632"
SIDE_PX = 382  # 300 m at level 17 (0.786 m/px on the ground at 48.85 N)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LONG = 1000  # steps of a job that must still be running when we act on it
WAIT = 120.0  # s: generous, a loaded 2-core machine can be 30x slower per step than an idle one
DROP = object()


# ---------------------------------------------------------------------------------------------
# helpers


def job(out=None, **changes) -> dict:
    body = {"bbox": list(BBOX), "crs": UTM, "prompt": "a park", "level": 17, "steps": 2,
            "seed": 7, "out": out}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not DROP}


def raw(svc, method, path, body=None, headers=None, host=None, content_type="application/json"):
    """One request with exactly the headers given: (status, lower-cased headers, body bytes)."""
    url = urllib.parse.urlsplit(svc.url if hasattr(svc, "url") else svc)
    sent = {"Host": url.netloc if host is None else host}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    if body is not None and content_type is not None:
        sent["Content-Type"] = content_type
    sent.update(headers or {})
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def detail(data: bytes) -> str:
    """The error body is JSON {"detail": "<one sentence>"}; return the sentence."""
    body = json.loads(data)
    assert isinstance(body, dict) and isinstance(body.get("detail"), str), body
    assert body["detail"].strip()
    return body["detail"]


def wait_for(predicate, timeout=30.0, poll=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_running(client: EngineClient, job_id: str, timeout: float = WAIT) -> dict:
    """Until the job is running with at least one step done (so it has latents to preview)."""

    def check():
        status = client.status(job_id)
        assert status["state"] in ("queued", "running"), status
        return status if status["state"] == "running" and status["step"] >= 1 else None

    return wait_for(check, timeout, what=f"job {job_id} to run a step")


def wait_final(client: EngineClient, job_id: str, timeout: float = WAIT) -> dict:
    return wait_for(
        lambda: (s := client.status(job_id))["state"] in ("done", "failed", "cancelled") and s,
        timeout, what=f"job {job_id} to end",
    )


def cancel_if_accepted(client: EngineClient, status: int, data: bytes) -> None:
    """A job that should have been refused but was queued: stop it before it writes."""
    if status == 202:
        try:
            client.cancel(json.loads(data)["id"])
        except ServiceError as exc:  # it already ended
            assert exc.status == 409


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()}


def start(model, output_dirs, **kwargs):
    return start_local_service(
        python=sys.executable, output_dirs=[str(d) for d in output_dirs], model=str(model),
        device="cpu", timeout=120, env={"PYTHONPATH": str(ROOT)}, **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# the shared service


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("service").resolve()
    first, second, elsewhere = base / "first", base / "second", base / "elsewhere"
    for folder in (first, second, elsewhere):
        folder.mkdir()
    return first, second, elsewhere


@pytest.fixture(scope="module")
def service(tiny_t2i, dirs):
    first, second, _ = dirs
    svc = start(tiny_t2i, [first, second])
    yield svc
    svc.stop()


def leave_idle(service, timeout: float) -> None:
    """A test that failed half-way must not leave a long job blocking the next tests."""
    if service.process.poll() is None:
        for left in service.client.jobs():
            if left["state"] in ("queued", "running"):
                try:
                    service.client.cancel(left["id"])
                except ServiceError:
                    pass
        wait_for(lambda: service.client.health()["running"] is None, timeout=timeout,
                 what="the shared service to be idle")


@pytest.fixture
def client(service) -> EngineClient:
    yield service.client
    leave_idle(service, timeout=30)


def test_serve_help_lists_the_options():
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "serve", "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--port-file", "--model", "--device", "--output-dir",
                   "--token-file", "--max-pixels"):
        assert option in result.stdout


def test_health_and_openapi(service, client):
    # The model may load in the background after the port opens; /health reports it when ready.
    info = wait_for(lambda: (h := client.health())["models"] and h, timeout=WAIT,
                    what="the model to be reported loaded")
    assert info["service"] == "text2earth"
    assert info["version"] == engine.__version__
    assert info["api_version"] == 1
    assert info["device"]["type"] == "cpu"
    assert info["queue_length"] == 0
    assert info["running"] is None
    assert info["models"] and info["models"][0]["device"] == "cpu"
    status, headers, data = raw(service, "GET", "/openapi.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    paths = json.loads(data)["paths"]
    assert "/jobs" in paths and "/health" in paths
    assert "post" in paths["/jobs"]
    assert any(p.startswith("/jobs/{") for p in paths)


def test_generate_job_queued_to_done_lands_on_the_bbox(service, client, dirs):
    first = dirs[0]
    status, _, data = raw(service, "POST", "/jobs", job("scene-a.tif", steps=8))
    assert status == 202, data
    submitted = json.loads(data)
    assert isinstance(submitted["id"], str) and submitted["id"]
    assert submitted["state"] in ("queued", "running")
    assert submitted["steps"] == 8
    assert Path(submitted["out"]) == first / "scene-a.tif"

    seen = []
    result = client.wait(submitted["id"], poll=0.05, timeout=WAIT, on_progress=seen.append)
    states = [s["state"] for s in seen]
    steps = [s["step"] for s in seen]
    assert set(states) <= {"queued", "running", "done"} and states[-1] == "done"
    assert steps == sorted(steps), steps  # never goes back
    assert steps[-1] == 8
    assert any(0 < s["step"] < 8 for s in seen), f"no intermediate step seen: {steps}"
    for s in seen:
        assert s["steps"] == 8 and s["error"] is None
        if s["step"] == 0:
            assert s["eta_s"] is None
        if s["state"] == "running" and s["step"] >= 1:
            assert isinstance(s["eta_s"], (int, float)) and s["eta_s"] >= 0
            assert isinstance(s["elapsed_s"], (int, float)) and s["elapsed_s"] >= 0
    final = client.status(submitted["id"])
    assert final["state"] == "done" and final["step"] == final["steps"] == 8
    assert final["tile"] == final["tiles"] >= 1
    assert final["queue_position"] is None

    path = Path(result["path"])
    assert path == first / "scene-a.tif" and path.is_file()
    assert result["id"] == submitted["id"]
    with rasterio.open(path) as ds:
        assert tuple(ds.bounds) == pytest.approx(BBOX, abs=1e-3)
        assert CRS.from_wkt(ds.crs.to_wkt()).equals(CRS.from_user_input(UTM))
        assert (ds.width, ds.height) == (result["width"], result["height"]) == (SIDE_PX, SIDE_PX)
        assert ds.count == 3
        tags = ds.tags()
    assert tags["TEXT2EARTH_PROMPT"] == "a park"
    assert tags["TEXT2EARTH_SEED"] == "7"
    assert tags["TEXT2EARTH_LEVEL"] == "17"
    assert tags["TEXT2EARTH_STEPS"] == "8"
    assert tags["TEXT2EARTH_MODEL_SHA256"] == client.health()["models"][0]["weights_sha256"]
    assert result["bounds"] == pytest.approx(BBOX, abs=1e-3)
    assert result["crs_authid"] == UTM
    assert CRS.from_wkt(result["crs_wkt"]).equals(CRS.from_user_input(UTM))
    assert result["level"] == 17 and result["seed"] == 7
    assert result["ground_resolution_m"] == pytest.approx(
        float(tags["TEXT2EARTH_GROUND_RESOLUTION_M"]), rel=1e-4)
    assert result["tags"]["TEXT2EARTH_PROMPT"] == "a park"

    preview = client.preview(submitted["id"])  # after done
    assert preview is not None and preview.startswith(PNG_MAGIC)
    Image.open(io.BytesIO(preview)).verify()


def test_output_names_bare_auto_and_second_folder(client, dirs):
    first, second, _ = dirs
    bare = client.submit(job("bare.tif"))
    auto = client.submit(job(None, seed=None))
    other = client.submit(job(str(second / "other.tif")))
    assert Path(bare["out"]) == first / "bare.tif"
    assert Path(other["out"]) == second / "other.tif"
    r_bare = client.wait(bare["id"], poll=0.05, timeout=WAIT)
    r_auto = client.wait(auto["id"], poll=0.05, timeout=WAIT)
    r_other = client.wait(other["id"], poll=0.05, timeout=WAIT)
    assert Path(r_bare["path"]) == first / "bare.tif" and (first / "bare.tif").is_file()
    assert Path(r_other["path"]) == second / "other.tif" and (second / "other.tif").is_file()
    auto_path = Path(r_auto["path"])
    assert auto_path.parent == first and auto_path.suffix in (".tif", ".tiff")
    with rasterio.open(auto_path) as ds:  # a random seed is chosen and reported
        assert isinstance(r_auto["seed"], int)
        assert ds.tags()["TEXT2EARTH_SEED"] == str(r_auto["seed"])


def test_burst_runs_in_submission_order(service, client, dirs):
    first = dirs[0]
    blocker = client.submit(job("blocker.tif", steps=LONG))
    wait_running(client, blocker["id"])
    burst = [client.submit(job(f"burst-{i}.tif")) for i in range(5)]
    positions = [b["queue_position"] for b in burst]
    assert all(b["state"] == "queued" for b in burst)
    assert positions[0] in (1, 2) and positions == list(range(positions[0], positions[0] + 5))
    assert client.status(burst[3]["id"])["queue_position"] == positions[3]
    health = client.health()
    assert health["queue_length"] == 5
    assert health["running"] is not None
    assert client.preview(burst[0]["id"]) is None  # no step yet: 404
    listed = [j["id"] for j in client.jobs()]
    assert listed[-5:] == [b["id"] for b in burst]  # newest last

    client.cancel(blocker["id"])
    ids = [b["id"] for b in burst]

    def snapshot():
        # Newest first: if a later job reads running/done, every earlier one, read after it,
        # must read done (one worker, in order).
        states = {i: client.status(i)["state"] for i in reversed(ids)}
        for k, later in enumerate(ids):
            if states[later] in ("running", "done"):
                assert all(states[e] == "done" for e in ids[:k]), states
        assert sum(s == "running" for s in states.values()) <= 1, states
        return all(s == "done" for s in states.values())

    wait_for(snapshot, timeout=WAIT, poll=0.02, what="the burst to finish")
    mtimes = [(first / f"burst-{i}.tif").stat().st_mtime_ns for i in range(5)]
    assert mtimes == sorted(mtimes)
    assert client.status(blocker["id"])["state"] == "cancelled"
    assert not (first / "blocker.tif").exists()


def test_concurrent_burst_from_many_clients_all_complete(service, client, dirs):
    first = dirs[0]
    answers: dict[int, dict] = {}
    go = threading.Barrier(5)

    def submit(i):
        own = EngineClient(service.url)
        go.wait(10)
        answers[i] = own.submit(job(f"crowd-{i}.tif", steps=1, seed=i))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(answers) == list(range(5))
    assert len({a["id"] for a in answers.values()}) == 5
    for i, answer in answers.items():
        result = client.wait(answer["id"], poll=0.05, timeout=WAIT)
        assert Path(result["path"]) == first / f"crowd-{i}.tif" and result["seed"] == i
        with rasterio.open(result["path"]) as ds:
            assert ds.tags()["TEXT2EARTH_SEED"] == str(i)


def test_cancel_running_and_queued_jobs_leave_no_file(service, client, dirs):
    first = dirs[0]
    before = files_under(first)
    running = client.submit(job("cancel-running.tif", steps=LONG))
    wait_running(client, running["id"])
    queued = client.submit(job("cancel-queued.tif"))
    assert queued["state"] == "queued"

    status, headers, data = raw(service, "GET", f"/jobs/{running['id']}/preview")
    assert status == 200 and headers["content-type"] == "image/png"
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.width > 0 and image.height > 0
    assert client.preview(queued["id"]) is None

    dropped = client.cancel(queued["id"])
    assert dropped["state"] == "cancelled"  # a queued job is dropped at once
    stopping = client.cancel(running["id"])
    assert stopping["state"] in ("running", "cancelled")
    final = wait_final(client, running["id"], timeout=30)
    assert final["state"] == "cancelled" and final["step"] < LONG
    with pytest.raises(JobCancelled):
        client.wait(running["id"], poll=0.05, timeout=5)
    for cancelled in (running, queued):
        with pytest.raises(ServiceError) as info:
            client.result(cancelled["id"])
        assert info.value.status == 409

    after = client.submit(job("after-cancel.tif"))
    client.wait(after["id"], poll=0.05, timeout=WAIT)
    never_ran = client.status(queued["id"])
    assert never_ran["state"] == "cancelled" and never_ran["step"] == 0
    assert client.preview(queued["id"]) is None
    assert files_under(first) - before == {"after-cancel.tif"}
    assert not any(".tmp" in name for name in files_under(first))

    with pytest.raises(ServiceError) as info:  # a done job cannot be cancelled
        client.cancel(after["id"])
    assert info.value.status == 409
    assert client.status(after["id"])["state"] == "done"


@pytest.mark.parametrize("method,suffix", [
    ("GET", ""), ("DELETE", ""), ("GET", "/result"), ("GET", "/preview"),
])
def test_unknown_job_is_404(service, method, suffix):
    status, _, data = raw(service, method, f"/jobs/0123456789abcdef{suffix}")
    assert status == 404
    detail(data)


# ---------------------------------------------------------------------------------------------
# validation: 422, a precise message, nothing queued, nothing written


def _symlinked_dir(first, elsewhere):
    link = first / "link-out"
    if not link.is_symlink():
        link.symlink_to(elsewhere, target_is_directory=True)
    return {"out": "link-out/escaped.tif"}


def _symlinked_file(first, elsewhere):
    link = first / "evil.tif"
    if not link.is_symlink():
        link.symlink_to(elsewhere / "target.tif")  # dangling: would be created outside
    return {"out": "evil.tif", "overwrite": True}


def _existing(first, elsewhere):
    (first / "exists.tif").write_bytes(b"mine")
    return {"out": "exists.tif"}


INVALID = [
    # (changes or a function(first, elsewhere) -> changes, words the detail must contain)
    ({"bbox": "447000,5411000,447300,5411300"}, ["bbox"]),
    ({"bbox": [447000, 5411000, 447300]}, ["bbox"]),
    ({"bbox": [447000, 5411000, 447300, "x"]}, ["bbox"]),
    ({"bbox": DROP}, ["bbox"]),
    ({"level": "x"}, ["level"]),
    ({"level": 25}, ["level"]),
    ({"level": 17.5}, ["level"]),
    ({"crs": "EPSG:999999"}, ["crs"]),
    ({"crs": DROP}, ["crs"]),
    ({"prompt": DROP}, ["prompt"]),
    ({"prompt": "   "}, ["prompt"]),
    ({"bbox": [447000, 5411000, 447000, 5411300]}, ["zero area"]),
    ({"bbox": [447300, 5411000, 447000, 5411300]}, ["inverted"]),
    ({"bbox": [0, 0, 900000, 9000000]}, ["limit"]),
    ({"level": 17, "resolution": 0.6}, ["level", "resolution"]),
    ({"level": None, "resolution": -1}, ["resolution"]),
    ({"dpi": 0}, ["dpi"]),
    ({"colour": "green"}, ["colour"]),
    ({"type": "inpaint"}, ["type"]),
    ({"scheduler": "magic"}, ["scheduler"]),
    ({"precision": "fp8"}, ["precision"]),
    ({"precision": "fp16"}, ["fp16 runs on GPUs only"]),  # the service runs on the CPU
    ({"steps": 0}, ["steps"]),
    ({"steps": 1001}, ["steps"]),
    ({"seed": -1}, ["seed"]),
    ({"seed": 2**32}, ["seed"]),
    ({"guidance": 51}, ["guidance"]),
    ({"out": "scene.png"}, [".tif"]),
    ({"out": "../escaped.tif"}, ["out"]),
    ({"out": "sub/../../escaped.tif"}, ["out"]),
    (lambda first, elsewhere: {"out": str(elsewhere / "abs.tif")}, ["out"]),
    (lambda first, elsewhere: {"out": str(first / ".." / "escaped.tif")}, ["out"]),
    (_symlinked_dir, ["out"]),
    (_symlinked_file, ["out"]),
    (_existing, ["exists"]),
]


@pytest.mark.parametrize("changes,words", INVALID)
def test_invalid_job_is_422_and_never_queued(service, client, dirs, changes, words):
    first, second, elsewhere = dirs
    if callable(changes):
        changes = changes(first, elsewhere)
    never = f"never-{abs(hash(repr(changes)))}.tif"
    body = job(never)
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not DROP}
    count = len(client.jobs())
    status, _, data = raw(service, "POST", "/jobs", body)
    cancel_if_accepted(client, status, data)
    assert status == 422, data
    message = detail(data)
    for word in words:
        assert word.lower() in message.lower(), message
    errors = json.loads(data).get("errors", [])
    assert isinstance(errors, list)
    assert all(isinstance(e.get("field"), str) and isinstance(e.get("message"), str)
               for e in errors)
    assert len(client.jobs()) == count
    assert client.health()["queue_length"] == 0
    assert not (first / never).exists()
    assert not (first.parent / "escaped.tif").exists()
    assert files_under(elsewhere) == set()
    if (first / "exists.tif").exists():
        assert (first / "exists.tif").read_bytes() == b"mine"




@pytest.mark.parametrize("changes,field", [
    ({"steps": True}, "steps"),
    ({"overwrite": "yes"}, "overwrite"),
    ({"level": "17"}, "level"),
    ({"level": True}, "level"),
    ({"negative_prompt": 5}, "negative_prompt"),
    ({"bbox": [float("nan"), 5411000, 447300, 5411300]}, "finite"),
])
def test_wrong_json_types_are_422(service, client, dirs, changes, field):
    count = len(client.jobs())
    body = job(f"wrong-{abs(hash(repr(changes)))}.tif", **changes)
    status, _, data = raw(service, "POST", "/jobs", body)
    cancel_if_accepted(client, status, data)
    assert status == 422, data
    assert field in detail(data)
    assert len(client.jobs()) == count


@pytest.mark.parametrize("body", [b'{"bbox": [1, 2', b"", b"not json", b"[1, 2, 3]", b"null"])
def test_malformed_body_is_refused_with_a_sentence(service, client, body):
    count = len(client.jobs())
    status, _, data = raw(service, "POST", "/jobs", body)
    assert status in (400, 422), data
    detail(data)
    assert len(client.jobs()) == count


def test_overwrite_replaces_an_existing_output(client, dirs):
    first = dirs[0]
    (first / "replace-me.tif").write_bytes(b"old")
    result = client.wait(client.submit(job("replace-me.tif", overwrite=True))["id"], poll=0.05,
                         timeout=WAIT)
    assert Path(result["path"]) == first / "replace-me.tif"
    with rasterio.open(first / "replace-me.tif") as ds:
        assert ds.tags()["TEXT2EARTH_SEED"] == "7"


def test_job_failing_at_run_time_fails_alone(service, client, dirs):
    """The output appears while the job waits in the queue: it fails, the next one runs."""
    first = dirs[0]
    blocker = client.submit(job("blocker-2.tif", steps=LONG))
    wait_running(client, blocker["id"])
    doomed = client.submit(job("collide.tif"))
    fine = client.submit(job("after-failure.tif"))
    (first / "collide.tif").write_bytes(b"mine")
    client.cancel(blocker["id"])
    with pytest.raises(JobFailed) as info:
        client.wait(doomed["id"], poll=0.05, timeout=WAIT)
    assert "exists" in str(info.value)
    status = client.status(doomed["id"])
    assert status["state"] == "failed"
    assert "exists" in status["error"] and "\n" not in status["error"]
    assert "Traceback" not in status["error"]
    with pytest.raises(ServiceError) as info:
        client.result(doomed["id"])
    assert info.value.status == 409 and "exists" in info.value.message
    with pytest.raises(ServiceError) as info:
        client.cancel(doomed["id"])
    assert info.value.status == 409
    assert (first / "collide.tif").read_bytes() == b"mine"
    result = client.wait(fine["id"], poll=0.05, timeout=WAIT)
    with rasterio.open(result["path"]) as ds:
        assert tuple(ds.bounds) == pytest.approx(BBOX, abs=1e-3)


def test_folder_swapped_for_a_symlink_while_queued_writes_nothing_outside(client, dirs):
    """Checked at submission and again when written: "jobs write only inside these folders"."""
    first, _, elsewhere = dirs
    (first / "swap").mkdir()
    blocker = client.submit(job("blocker-3.tif", steps=LONG))
    wait_running(client, blocker["id"])
    swapped = client.submit(job("swap/inside.tif"))
    (first / "swap").rmdir()
    (first / "swap").symlink_to(elsewhere, target_is_directory=True)
    client.cancel(blocker["id"])
    try:
        final = wait_final(client, swapped["id"])
        assert files_under(elsewhere) == set()
        assert final["state"] == "failed" and "outside" in final["error"]
    finally:
        (first / "swap").unlink()
        for leaked in elsewhere.iterdir():
            leaked.unlink()


# ---------------------------------------------------------------------------------------------
# web pages on the same machine


@pytest.mark.parametrize("host", [
    "evil.example", "evil.example:{port}", "localhost.evil.example:{port}",
    "127.0.0.1.nip.io:{port}", "10.0.0.1:{port}",
])
def test_foreign_host_header_is_403(service, client, host):
    host = host.format(port=urllib.parse.urlsplit(service.url).port)
    count = len(client.jobs())
    status, _, data = raw(service, "GET", "/health", host=host)
    assert status == 403, data
    detail(data)
    status, _, data = raw(service, "POST", "/jobs", job("rebound.tif"), host=host)
    assert status == 403, data
    assert len(client.jobs()) == count


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "localhost",
                                  "[::1]:{port}", "127.0.0.1"])
def test_loopback_host_headers_are_served(service, host):
    host = host.format(port=urllib.parse.urlsplit(service.url).port)
    status, _, data = raw(service, "GET", "/health", host=host)
    assert status == 200, data
    assert json.loads(data)["service"] == "text2earth"


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", None,
])
def test_post_without_json_content_type_is_415(service, client, content_type):
    count = len(client.jobs())
    status, _, data = raw(service, "POST", "/jobs", json.dumps(job("form.tif")).encode(),
                          content_type=content_type)
    assert status == 415, data
    detail(data)
    assert len(client.jobs()) == count


def test_json_content_type_with_charset_is_accepted(service, client):
    status, _, data = raw(service, "POST", "/jobs", job("charset.tif"),
                          content_type="application/json; charset=utf-8")
    assert status == 202, data
    client.wait(json.loads(data)["id"], poll=0.05, timeout=WAIT)


def test_no_cors_headers_on_any_answer(service):
    origin = {"Origin": "http://evil.example"}
    answers = [
        raw(service, "GET", "/health", headers=origin),
        raw(service, "GET", "/jobs", headers=origin),
        raw(service, "GET", "/jobs/0123456789abcdef", headers=origin),
        raw(service, "OPTIONS", "/jobs", headers={
            **origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"}),
        raw(service, "POST", "/jobs", b"{}", headers=origin, content_type="text/plain"),
        raw(service, "POST", "/jobs", {"bbox": "x"}, headers=origin),
        raw(service, "GET", "/health", headers=origin, host="evil.example"),
    ]
    assert [a[0] for a in answers][:3] == [200, 200, 404]
    assert [a[0] for a in answers][4:] == [415, 422, 403]
    assert answers[3][0] != 200 or "access-control-allow-origin" not in answers[3][1]
    for status, headers, _ in answers:
        assert not [h for h in headers if h.startswith("access-control-")], (status, headers)


# ---------------------------------------------------------------------------------------------
# token, non-loopback, start and crash


@pytest.fixture(scope="module")
def token_service(tiny_t2i, tmp_path_factory):
    base = tmp_path_factory.mktemp("token-service")
    out, token_file = base / "out", base / "secret" / "token"
    out.mkdir()
    assert not token_file.exists()
    svc = start(tiny_t2i, [out], token_file=token_file)
    yield svc, token_file, out.resolve()
    svc.stop()


def test_token_protected_service(token_service):
    svc, token_file, out = token_service
    assert token_file.is_file()  # absent at start: written, readable by the user only
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 16
    assert svc.client.token == token

    for headers in ({}, {"Authorization": "Bearer wrong-token"},
                    {"Authorization": f"Basic {token}"}, {"Authorization": token},
                    {"Authorization": f"Bearer {token}x"}):
        for method, path, body in (("GET", "/health", None), ("GET", "/jobs", None),
                                   ("GET", "/openapi.json", None),
                                   ("POST", "/jobs", job("sneaky.tif"))):
            status, _, data = raw(svc, method, path, body, headers=headers)
            assert status == 401, (headers, path, data)
            detail(data)
    with pytest.raises(ServiceError) as info:
        EngineClient(svc.url).health()
    assert info.value.status == 401
    status, _, data = raw(svc, "GET", "/health", headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and json.loads(data)["service"] == "text2earth"

    assert svc.client.jobs() == []  # the unauthenticated POSTs queued nothing
    result = svc.client.wait(svc.client.submit(job("with-token.tif"))["id"], poll=0.05,
                             timeout=WAIT)
    assert Path(result["path"]) == out / "with-token.tif"
    assert files_under(out) == {"with-token.tif"}


def test_non_ascii_token_is_401_not_a_server_error(token_service):
    svc, token_file, _ = token_service
    status, _, data = raw(svc, "GET", "/health", headers={"Authorization": "Bearer t\xe9st"})
    token = token_file.read_text().strip()
    assert raw(svc, "GET", "/health", headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert status == 401, data
    detail(data)


def test_stopped_mid_job_leaves_no_file(token_service):
    """The last test of the token service: stopping it (SIGTERM) while a job runs."""
    svc, _, out = token_service
    before = files_under(out)
    long_job = svc.client.submit(job("stopped.tif", steps=LONG))
    wait_running(svc.client, long_job["id"])
    svc.stop()
    assert svc.process.returncode is not None
    assert files_under(out) == before
    assert not (out / "stopped.tif").exists()


def test_non_loopback_without_token_refuses_to_start(tiny_t2i, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "serve", "--host", "0.0.0.0", "--port", "0",
         "--model", str(tiny_t2i), "--device", "cpu", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "token" in said.lower(), said
    assert "Traceback" not in said


def test_existing_token_is_reused_and_a_kill_mid_job_is_reported(tiny_t2i, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    token_file = tmp_path / "token"
    token = "a-token-chosen-by-the-user-0123456789"
    token_file.write_text(token)
    token_file.chmod(0o600)
    svc = start(tiny_t2i, [out], token_file=token_file)
    try:
        # Present: reused as it is, not replaced.
        assert token_file.read_text() == token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert svc.client.token == token
        assert raw(svc, "GET", "/health")[0] == 401
        assert raw(svc, "GET", "/health", headers={"Authorization": f"Bearer {token}"})[0] == 200

        submitted = svc.client.submit(job("killed.tif", steps=LONG))
        killed = threading.Event()

        def kill_once_running(status):
            if status["state"] == "running" and status["step"] >= 1 and not killed.is_set():
                svc.process.kill()
                svc.process.wait(10)
                killed.set()

        with pytest.raises(ServiceNotRunning) as info:
            svc.client.wait(submitted["id"], poll=0.05, timeout=WAIT,
                            on_progress=kill_once_running)
        assert killed.is_set()
        assert svc.url in str(info.value) and "not answering" in str(info.value)
        with pytest.raises(ServiceNotRunning):
            svc.client.status(submitted["id"])
        with pytest.raises(ServiceNotRunning):
            svc.client.health()
        assert not (out / "killed.tif").exists()
    finally:
        svc.stop()


def test_start_with_a_broken_python_raises_start_error(tmp_path):
    with pytest.raises(ServiceStartError) as info:
        start_local_service(python=str(tmp_path / "no" / "python"), output_dirs=[str(tmp_path)],
                            timeout=10)
    assert "python" in str(info.value).lower()


def test_start_with_a_bad_option_reports_the_exit(tmp_path):
    with pytest.raises(ServiceStartError) as info:
        start_local_service(python=sys.executable, output_dirs=[str(tmp_path)],
                            extra_args=["--no-such-option"], timeout=60,
                            env={"PYTHONPATH": str(ROOT)})
    assert "exited with code" in str(info.value)


def test_nothing_listening_is_service_not_running():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = EngineClient(f"http://127.0.0.1:{port}", timeout=2)
    for call in (client.health, client.jobs, lambda: client.status("x"),
                 lambda: client.submit(job())):
        with pytest.raises(ServiceNotRunning) as info:
            call()
        assert str(port) in str(info.value)


def test_job_naming_another_model_fails_alone_with_its_message(client, dirs, tiny_t2i,
                                                              tiny_inpaint):
    """A job may name its model; an inpainting checkpoint cannot do text-to-image."""
    first = dirs[0]
    # level 16: 191 px, one canvas (a larger output is a scene, which it can outpaint)
    inpaint = client.submit(job("inpaint.tif", model=str(tiny_inpaint), level=16))
    missing = client.submit(job("missing-model.tif", model="someone/no-such-model"))
    fine = client.submit(job("after-other-models.tif"))
    with pytest.raises(JobFailed) as info:
        client.wait(inpaint["id"], poll=0.05, timeout=WAIT)
    assert "inpainting" in str(info.value)
    with pytest.raises(JobFailed) as info:
        client.wait(missing["id"], poll=0.05, timeout=WAIT)
    assert "no-such-model" in str(info.value)
    for failed in (inpaint, missing):
        status = client.status(failed["id"])
        assert status["state"] == "failed" and "Traceback" not in status["error"]
        assert "\n" not in status["error"]
    result = client.wait(fine["id"], poll=0.05, timeout=WAIT)  # the service's own model again
    with rasterio.open(result["path"]) as ds:
        assert ds.tags()["TEXT2EARTH_MODEL_ID"] == tiny_t2i.resolve().name
        assert ds.tags()["TEXT2EARTH_PROMPT"] == "a park"
    assert not (first / "inpaint.tif").exists() and not (first / "missing-model.tif").exists()


# ---------------------------------------------------------------------------------------------
# last: after everything above, the shared service still serves


def test_service_still_serves_after_hostile_requests(service, client, dirs):
    assert service.process.poll() is None
    health = client.health()
    assert health["queue_length"] == 0 and health["running"] is None
    result = client.wait(client.submit(job("last.tif"))["id"], poll=0.05, timeout=WAIT)
    with rasterio.open(result["path"]) as ds:
        assert tuple(ds.bounds) == pytest.approx(BBOX, abs=1e-3)
        assert ds.tags()["TEXT2EARTH_PROMPT"] == "a park"
    states = {j["state"] for j in client.jobs()}
    assert states <= {"done", "failed", "cancelled"}


def test_sigterm_mid_scene_cleans_up_like_sigint(tiny_t2i, tmp_path):
    """QGIS stops the engine with terminate(): a running scene's scratch and the port file go."""
    out_dir = tmp_path / "out"
    svc = start(tiny_t2i, [out_dir])
    port_file = None
    try:
        submitted = svc.client.submit(job(
            "scene.tif", bbox=[447000, 5411000, 447500, 5411400], tile=256, overlap=64,
            steps=400, scene_method="joint"))
        wait_running(svc.client, submitted["id"])
        assert any(name.startswith(".t2e-scene-") and name.endswith(".tif")
                   for name in files_under(out_dir))
        port_file = Path(next(a for a in svc.process.args if a.endswith("port")))
        svc.process.terminate()
        svc.process.wait(60)
        assert files_under(out_dir) == set()  # no scratch, no state, no temp, no output
        assert not port_file.exists()
        assert "service stopped" in svc.log_path.read_text()
    finally:
        svc.stop()


def test_output_under_a_file_is_422_at_submission(service, client, dirs):
    (dirs[0] / "plain-file.tif").write_bytes(b"x")
    with pytest.raises(ServiceError) as info:
        client.submit(job("plain-file.tif/x.tif"))
    assert info.value.status == 422 and "is a file" in info.value.message


def test_missing_local_model_is_422_at_submission(service, client, dirs, tmp_path):
    with pytest.raises(ServiceError) as info:
        client.submit(job("m.tif", model=str(tmp_path / "no-model-here")))
    assert info.value.status == 422 and "no-model-here" in info.value.message


# ---------------------------------------------------------------------------------------------
# edit and extend jobs

RGB_BYTE = ROOT.parent / "shared" / "data" / "rasters" / "RGB.byte.tif"
# 18 x 18 px of data near RGB.byte.tif's centre, in its CRS (UTM 18N)
EDIT_MASK = {"type": "Polygon", "coordinates": [[
    [220650.0, 2716350.0], [226050.0, 2716350.0], [226050.0, 2721750.0],
    [220650.0, 2721750.0], [220650.0, 2716350.0]]]}


def edit_job(out, model, **changes) -> dict:
    body = {"type": "edit", "raster": str(RGB_BYTE), "mask": EDIT_MASK,
            "mask_crs": "EPSG:32618", "prompt": "a lake", "steps": 1, "seed": 3, "tile": 64,
            "overlap": 16, "model": str(model), "out": out}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not DROP}


def test_edit_job_keeps_the_source_grid_and_reports_windows(service, client, dirs,
                                                            tiny_inpaint):
    submitted = client.submit(edit_job("edited.tif", tiny_inpaint))
    assert submitted["tiles"] >= 1
    result = client.wait(submitted["id"], poll=0.05, timeout=WAIT)
    final = client.status(submitted["id"])
    assert final["state"] == "done" and final["tile"] == final["tiles"] == submitted["tiles"]
    path = Path(result["path"])
    assert path == dirs[0] / "edited.tif"
    with rasterio.open(RGB_BYTE) as src, rasterio.open(path) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height, out.count, out.nodata) == (src.width, src.height,
                                                                  src.count, src.nodata)
        changed = (out.read() != src.read()).any(axis=0)
        assert 0 < changed.sum() < 0.01 * changed.size
    assert result["seed"] == 3 and result["level"] == 10 and result["notes"]
    assert tuple(result["bounds"]) == pytest.approx(tuple(rasterio.open(RGB_BYTE).bounds))


def test_extend_job_grows_the_raster(service, client, dirs, tiny_inpaint, tmp_path):
    small = tmp_path / "small.tif"
    with rasterio.open(RGB_BYTE) as src:
        window = rasterio.windows.Window(300, 300, 40, 30)
        profile = dict(src.profile, width=40, height=30, transform=src.window_transform(window))
        with rasterio.open(small, "w", **profile) as dst:
            dst.write(src.read(window=window))
    body = edit_job("extended.tif", tiny_inpaint, type="extend", raster=str(small),
                    by="6px", side="west", mask=DROP, mask_crs=DROP)
    result = client.wait(client.submit(body)["id"], poll=0.05, timeout=WAIT)
    with rasterio.open(small) as src, rasterio.open(result["path"]) as out:
        assert (out.width, out.height) == (46, 30)
        assert (out.read()[:, :, 6:] == src.read()).all()
        assert out.transform * (6, 0) == pytest.approx(src.transform * (0, 0))


@pytest.mark.parametrize("changes,words", [
    (dict(raster="RGB.byte.tif"), "absolute path"),
    (dict(raster=str(RGB_BYTE.with_name("rotated.tif"))), "no coordinate reference system"),
    (dict(mask_crs="EPSG:4326"), "CRS right"),
    (dict(mask="POLYGON ((0 0, 1 0, 1 1, 0 0))"), "outside the raster"),
    (dict(type="extend", by="5px", side="up", mask=DROP, mask_crs=DROP), "side"),
    (dict(type="extend", by="far", side="east", mask=DROP, mask_crs=DROP), "distance"),
    (dict(dilate=-1), "dilate"),
    (dict(type="paint"), "'generate', 'edit', 'extend'"),
])
def test_invalid_edit_jobs_are_422(service, client, dirs, tiny_inpaint, changes, words):
    status, _, data = raw(service, "POST", "/jobs", edit_job("bad.tif", tiny_inpaint, **changes))
    cancel_if_accepted(client, status, data)
    assert status == 422, data
    assert words in detail(data)
    assert not (dirs[0] / "bad.tif").exists()
