"""Hostile requests against a real served service on loopback (issue 13): long-polls that
must not starve the server, symlink swaps at write and read time, size and queue limits,
malformed Host headers, unsupported methods, and a stable ``error_kind`` on every error.

Each test reproduces a defect found by an attack on the service, with hand-made requests
(raw sockets or http.client), and checks the answer a client can rely on.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import rasterio
from test_service import (
    BBOX,
    LONG,
    WAIT,
    detail,
    files_under,
    job,
    leave_idle,
    raw,
    start,
    wait_for,
)

from engine.errors import INTERNAL_KIND
from engine.service.job_queue import MAX_QUEUED
from text2earth_qgis.core.service.client import (
    EngineClient,
    JobFailed,
    ServiceError,
    ServiceStartError,
)


def kind(data: bytes) -> str:
    body = json.loads(data)
    assert isinstance(body.get("error_kind"), str) and body["error_kind"], body
    return body["error_kind"]


def wait_state(client: EngineClient, job_id: str, states, timeout: float = WAIT) -> dict:
    return wait_for(lambda: (s := client.status(job_id))["state"] in states and s, timeout,
                    what=f"job {job_id} to reach {states}")


def running_blocker(client: EngineClient, name: str) -> dict:
    """A long job that holds the worker, so later jobs stay queued (and unchanged)."""
    blocker = client.submit(job(name, steps=LONG))
    wait_for(lambda: (s := client.status(blocker["id"]))["state"] == "running"
             and s["step"] >= 1, WAIT, what="the blocker to run")
    return blocker


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hardening").resolve()


@pytest.fixture(scope="module")
def service(tiny_t2i, base):
    out, elsewhere = base / "out", base / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    svc = start(tiny_t2i, [out])
    yield svc
    svc.stop()


@pytest.fixture
def client(service):
    yield service.client
    leave_idle(service, timeout=60)


# ---------------------------------------------------------------------------------------------
# long-polls


def test_sixty_open_long_polls_leave_health_answering_at_once(service, client):
    """40 long-polls used to take every worker thread: /health then waited 19 s."""
    blocker = running_blocker(client, "poll-blocker.tif")
    waiting = client.submit(job("poll-target.tif"))  # queued: it does not change by itself
    version = waiting["version"]
    url = urllib.parse.urlsplit(service.url)
    answers: list[tuple[float, dict]] = []
    lock = threading.Lock()
    opened = threading.Barrier(61)

    def long_poll():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            conn.connect()
            opened.wait(30)
            conn.request("GET", f"/jobs/{waiting['id']}?since={version}&wait_s=20",
                         headers={"Host": url.netloc})
            response = conn.getresponse()
            body = json.loads(response.read())
            with lock:
                answers.append((time.monotonic(), body))
        finally:
            conn.close()

    threads = [threading.Thread(target=long_poll, daemon=True) for _ in range(60)]
    for t in threads:
        t.start()
    opened.wait(30)
    time.sleep(1.0)  # let all 60 requests reach the server and start waiting
    assert answers == []  # nothing changed: every poll is still open
    for _ in range(3):
        began = time.monotonic()
        status, _, data = raw(service, "GET", "/health")
        took = time.monotonic() - began
        assert status == 200 and json.loads(data)["service"] == "text2earth"
        assert took < 1.0, f"/health took {took:.1f} s with 60 long-polls open"
    began = time.monotonic()
    assert client.jobs()  # any other handler too
    assert time.monotonic() - began < 1.0

    cancelled_at = time.monotonic()
    client.cancel(waiting["id"])  # a change: every open poll answers now, not after 20 s
    for t in threads:
        t.join(15)
    assert len(answers) == 60
    assert all(body["state"] == "cancelled" and body["version"] > version
               for _, body in answers)
    assert max(at for at, _ in answers) - cancelled_at < 5.0
    client.cancel(blocker["id"])


def test_long_poll_times_out_with_the_unchanged_status(service, client):
    blocker = running_blocker(client, "poll-blocker-2.tif")
    waiting = client.submit(job("poll-target-2.tif"))
    began = time.monotonic()
    status = client.status(waiting["id"], since=waiting["version"], wait_s=1.0)
    assert 0.9 <= time.monotonic() - began < 5.0
    assert status["state"] == "queued" and status["version"] == waiting["version"]
    client.cancel(waiting["id"])
    client.cancel(blocker["id"])


# ---------------------------------------------------------------------------------------------
# symlinks


def test_output_folder_itself_swapped_for_a_symlink_writes_nothing_outside(service, client,
                                                                            base):
    """A swapped subfolder was caught; the output folder itself was not."""
    out, elsewhere = base / "out", base / "elsewhere"
    blocker = running_blocker(client, "swap-blocker.tif")
    swapped = client.submit(job("inside-swapped-root.tif"))
    real = base / "out-real"
    out.rename(real)
    out.symlink_to(elsewhere, target_is_directory=True)
    try:
        # submitted after the swap: refused at once
        status, _, data = raw(service, "POST", "/jobs", job("after-swap.tif"))
        assert status == 422, data
        assert "outside" in detail(data) and kind(data) == "bad_input"
        client.cancel(blocker["id"])
        final = wait_state(client, swapped["id"], ("done", "failed", "cancelled"))
        assert final["state"] == "failed", final
        assert "outside" in final["error"]
        assert final["error_kind"] == "bad_input"
        assert files_under(elsewhere) == set()
    finally:
        out.unlink()
        real.rename(out)
        for leaked in elsewhere.iterdir():
            leaked.unlink()


@pytest.mark.parametrize("plant", ["symlink-to-secret", "symlink-to-etc-passwd", "other-file"])
def test_file_endpoint_never_serves_what_was_planted_at_the_output(service, client, base,
                                                                   plant):
    """/file followed a symlink planted at a finished job's output (it served /etc/passwd)."""
    elsewhere = base / "elsewhere"
    secret = elsewhere / "secret.txt"
    secret.write_text("not for the web\n")
    result = client.wait(client.submit(job(f"planted-{plant}.tif"))["id"], poll=0.05,
                         timeout=WAIT)
    path = Path(result["path"])
    status, headers, data = raw(service, "GET", f"/jobs/{result['id']}/file")
    assert status == 200 and data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00")
    genuine = data
    assert genuine == path.read_bytes()
    assert headers["content-length"] == str(len(genuine))
    path.unlink()
    if plant == "symlink-to-secret":
        path.symlink_to(secret)
    elif plant == "symlink-to-etc-passwd":
        path.symlink_to("/etc/passwd")
    else:  # a regular file put there later is not the job's output either
        path.write_bytes(b"II*\x00 a different file")
    try:
        status, _, data = raw(service, "GET", f"/jobs/{result['id']}/file")
        assert status == 410, (status, data[:80])
        assert b"not for the web" not in data and b"root:" not in data
        assert "no longer" in detail(data) and kind(data) == "output_gone"
    finally:
        path.unlink()
        secret.unlink()
    # the genuine file put back (same bytes, same inode? no: a new file) is not served either
    path.write_bytes(genuine)
    try:
        assert raw(service, "GET", f"/jobs/{result['id']}/file")[0] == 410
    finally:
        path.unlink()


def test_file_endpoint_refuses_a_folder_swapped_above_the_output(service, client, base):
    out = base / "out"
    (out / "sub").mkdir()
    result = client.wait(client.submit(job("sub/deep.tif"))["id"], poll=0.05, timeout=WAIT)
    moved = base / "sub-moved"
    (out / "sub").rename(moved)
    (out / "sub").symlink_to(moved, target_is_directory=True)  # the very same file, via a link
    try:
        status, _, data = raw(service, "GET", f"/jobs/{result['id']}/file")
        assert status == 410, data[:80]
        assert kind(data) == "output_gone"
    finally:
        (out / "sub").unlink()
        shutil.rmtree(moved)


# ---------------------------------------------------------------------------------------------
# limits


def test_a_two_megabyte_json_body_is_413(service, client):
    count = len(client.jobs())
    body = json.dumps(job("big.tif", prompt="a park" + " " * (2 << 20))).encode()
    status, _, data = raw(service, "POST", "/jobs", body)
    if status == 202:
        client.cancel(json.loads(data)["id"])
    assert status == 413, data[:200]
    assert "1 MB" in detail(data) and kind(data) == "too_large"
    assert len(client.jobs()) == count


def test_a_body_announced_at_200_mb_is_refused_before_it_is_read(service):
    url = urllib.parse.urlsplit(service.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            f"POST /jobs HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {200 << 20}\r\n\r\n".encode() + b" " * (64 << 10))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)  # times out (10 s) when the server waits for 200 MB
            if not chunk:
                break
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:200]
    assert kind(payload) == "too_large"


def test_a_chunked_body_past_the_limit_is_413(service):
    url = urllib.parse.urlsplit(service.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=15)

    def chunks():
        for _ in range(40):
            yield b" " * (64 << 10)  # 2.5 MB in all, no Content-Length

    try:
        conn.request("POST", "/jobs", body=chunks(), encode_chunked=True,
                     headers={"Host": url.netloc, "Content-Type": "application/json",
                              "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        status, data = response.status, response.read()
    except (BrokenPipeError, ConnectionResetError):  # closed on us after the answer
        pytest.fail("the connection was dropped without an answer")
    finally:
        conn.close()
    assert status == 413, data[:200]
    assert kind(data) == "too_large"


def test_queue_is_capped_with_a_clear_message_and_listing_stays_fast(service, client):
    blocker = running_blocker(client, "cap-blocker.tif")
    queued = []
    try:
        for i in range(MAX_QUEUED):
            queued.append(client.submit(job(f"cap-{i}.tif"))["id"])
        status, _, data = raw(service, "POST", "/jobs", job("one-too-many.tif"))
        assert status == 429, data
        message = detail(data)
        assert str(MAX_QUEUED) in message and "queue" in message
        assert kind(data) == "queue_full"
        began = time.monotonic()
        listed = client.jobs()
        assert time.monotonic() - began < 1.0
        assert {j["id"] for j in listed} >= set(queued)
        positions = {j["id"]: j["queue_position"] for j in listed}
        assert [positions[i] for i in queued] == list(range(1, MAX_QUEUED + 1))
    finally:
        for job_id in queued:
            client.cancel(job_id)
        client.cancel(blocker["id"])
    # room again once the queue drains
    wait_for(lambda: client.health()["running"] is None, WAIT, what="the queue to drain")
    fine = client.submit(job("after-cap.tif"))
    client.wait(fine["id"], poll=0.05, timeout=WAIT)


@pytest.mark.parametrize("method,path,content_type", [
    ("PUT", "/jobs", "application/json"),
    ("PUT", "/jobs", None),
    ("PUT", "/jobs/0123456789abcdef", "application/json"),
    ("PATCH", "/health", "text/plain"),
    ("POST", "/health", "application/json"),
    ("TRACE", "/jobs", None),
])
def test_unsupported_methods_are_405(service, client, method, path, content_type):
    count = len(client.jobs())
    status, headers, data = raw(service, method, path, b"{}" if content_type else None,
                                content_type=content_type)
    assert status == 405, data
    assert method in detail(data) and kind(data) == "method_not_allowed"
    assert "allow" in headers
    assert len(client.jobs()) == count


@pytest.mark.parametrize("host", [
    "127.0.0.1:{port}@evil.example", "[::1]evil.example", "[::1]:{port}@evil.example",
    "localhost:{port}:80", "127.0.0.1:{port}/evil", "127.0.0.1 evil.example",
    "127.0.0.1:notaport", "[::1", "localhost..", "127.0.0.1:{port}#evil.example",
])
def test_malformed_host_headers_are_403(service, client, host):
    host = host.format(port=urllib.parse.urlsplit(service.url).port)
    count = len(client.jobs())
    status, _, data = raw(service, "GET", "/health", host=host)
    assert status in (400, 403), data  # 400: refused by the HTTP layer itself
    if status == 403:
        detail(data)
        assert kind(data) == "forbidden_host"
    status, _, data = raw(service, "POST", "/jobs", job("rebound.tif"), host=host)
    assert status in (400, 403), data
    assert len(client.jobs()) == count


def test_auto_scene_without_an_inpainting_model_reports_its_real_window_count(service,
                                                                              client):
    """auto falls back to joint denoising (one pass over all windows): tile 1 of 1, not the
    outpainting window count."""
    submitted = client.submit(job("auto-scene.tif", bbox=[447000, 5411000, 447500, 5411400],
                                  tile=256, overlap=64, steps=1, scene_method="auto"))
    assert submitted["tiles"] == 1, submitted
    result = client.wait(submitted["id"], poll=0.05, timeout=WAIT)
    final = client.status(submitted["id"])
    assert final["tiles"] == submitted["tiles"] and final["tile"] == 1
    with rasterio.open(result["path"]) as ds:
        assert ds.tags()["TEXT2EARTH_SCENE_METHOD"] == "joint"
    outpaint = raw(service, "POST", "/jobs", job(
        "outpaint-scene.tif", bbox=[447000, 5411000, 447500, 5411400], tile=256, overlap=64,
        scene_method="outpaint", inpaint_model="someone/no-such-inpainting", steps=1))
    assert outpaint[0] == 202
    outpaint = json.loads(outpaint[2])
    assert outpaint["tiles"] > 1  # outpainting asked for: window by window
    with pytest.raises(JobFailed) as failed:
        client.wait(outpaint["id"], poll=0.05, timeout=WAIT)
    assert failed.value.kind == "missing_model"


# ---------------------------------------------------------------------------------------------
# error_kind


def test_error_kind_in_failed_job_status_and_http_errors(service, client, base):
    out = base / "out"
    blocker = running_blocker(client, "kind-blocker.tif")
    doomed = client.submit(job("kind-collide.tif"))
    missing = client.submit(job("kind-missing.tif", model="someone/no-such-model"))
    assert doomed["error_kind"] is None
    (out / "kind-collide.tif").write_bytes(b"mine")
    client.cancel(blocker["id"])
    assert client.status(blocker["id"])["error_kind"] is None  # cancelled is no error
    with pytest.raises(JobFailed) as failed:
        client.wait(doomed["id"], poll=0.05, timeout=WAIT)
    assert failed.value.kind == "bad_input"
    assert client.status(doomed["id"])["error_kind"] == "bad_input"
    with pytest.raises(JobFailed) as failed:
        client.wait(missing["id"], poll=0.05, timeout=WAIT)
    assert failed.value.kind == "missing_model"
    status, _, data = raw(service, "GET", f"/jobs/{missing['id']}/result")
    assert status == 409 and kind(data) == "missing_model"

    answers = {
        "bad_input": raw(service, "POST", "/jobs", job("x.tif", level=25)),
        "not_found": raw(service, "GET", "/jobs/0123456789abcdef"),
        "unsupported_media_type": raw(service, "POST", "/jobs", b"{}", content_type="text/plain"),
        "forbidden_host": raw(service, "GET", "/health", host="evil.example"),
        "job_ended": raw(service, "DELETE", f"/jobs/{doomed['id']}"),
    }
    for expected, (status, _, data) in answers.items():
        assert 400 <= status < 500, (expected, status)
        assert kind(data) == expected, (expected, data)
    with pytest.raises(ServiceError) as info:
        client.submit(job("y.tif", crs="EPSG:999999"))
    assert info.value.kind == "bad_input"
    with pytest.raises(ServiceError) as info:
        client.submit(job("z.tif", model=str(base / "no-model-folder")))
    assert info.value.kind == "missing_model"
    (out / "kind-collide.tif").unlink()


def test_unexpected_failure_is_internal_kind(tiny_t2i, tmp_path):
    """A job that dies of a bug reports error_kind 'internal' (engine.errors.INTERNAL_KIND)."""
    from engine.service.job_queue import Job, JobQueue

    def buggy(job):
        raise ZeroDivisionError("division by zero")

    queue = JobQueue(buggy)
    try:
        failed = queue.submit(Job("generate", None, steps=1))
        wait_for(lambda: failed.state == "failed", 10)
        assert queue.status(failed)["error_kind"] == INTERNAL_KIND
    finally:
        queue.stop()


@pytest.mark.parametrize("token,mode,words", [
    ("a-token-chosen-by-the-user-0123456789", 0o644, "chmod 600"),
    ("hunter2", 0o600, "too weak"),
])
def test_serve_refuses_a_shared_or_weak_token_file(tiny_t2i, tmp_path, token, mode, words):
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(mode)
    with pytest.raises(ServiceStartError) as info:
        start(tiny_t2i, [tmp_path / "out"], token_file=token_file)
    said = str(info.value)
    assert words in said and str(token_file) in said, said
    assert "Traceback" not in said and token not in said
    assert token_file.read_text() == token + "\n"  # left as it was, for the user to decide


def test_service_still_serves_after_the_attacks(service, client, base):
    assert service.process.poll() is None
    result = client.wait(client.submit(job("last-one.tif"))["id"], poll=0.05, timeout=WAIT)
    with rasterio.open(result["path"]) as ds:
        assert tuple(ds.bounds) == pytest.approx(BBOX, abs=1e-3)
    assert files_under(base / "elsewhere") == set()
    assert not [n for n in os.listdir(base / "out") if ".tmp" in n]
