"""Requests checked before anything runs (issue 22, items 7, 9-12): the token file, extents,
prompts, the names a demo job writes, and the HTTP layer's own refusals.

The server is the one `text2earth serve` runs (engine.service.server.make_server), in this
process on a loopback port, with a job runner that never loads a model: every answer below
is given at submission. Raw sockets to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.geo.grid import DEFAULT_MAX_PIXELS
from engine.service.app import create_app
from engine.service.job_queue import JobQueue
from engine.service.network import bind
from engine.service.runner import ModelManager, ServiceConfig
from engine.service.server import make_server
from engine.service.token import load_or_create_token

BBOX = [447000.0, 5411000.0, 447300.0, 5411300.0]  # 300 m near Karlsruhe, UTM 32N
UTM = "EPSG:32632"


class LoopbackService:
    def __init__(self, out: Path) -> None:
        config = ServiceConfig(None, "cpu", [out], DEFAULT_MAX_PIXELS, demo_fallback=True)

        def never_runs(job):  # accepted jobs fail at once: these tests only submit
            raise InputError("not run in this test")

        self.queue = JobQueue(never_runs)
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = make_server(create_app(self.queue, ModelManager(config), config))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the loopback server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.queue.stop()

    def send(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """One raw request; (status, headers, body) of the answer, read to the end."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers, body

    def request(self, method: str, path: str, body: bytes | None = None,
                extra: str = "") -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{extra}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return self.send((head + "Connection: close\r\n\r\n").encode() + (body or b""))

    def submit(self, job: dict) -> tuple[int, dict]:
        # allow_nan: NaN and Infinity as Python's json (and so the service) reads them
        status, _, body = self.request("POST", "/jobs", json.dumps(job).encode())
        return status, json.loads(body)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("requests-out").resolve()


@pytest.fixture(scope="module")
def service(out):
    svc = LoopbackService(out)
    yield svc
    svc.stop()


def job(**changes) -> dict:
    return {"bbox": BBOX, "crs": UTM, "prompt": "a park", "level": 17, "steps": 1,
            **changes}


# --- item 7: a FIFO as the token file ------------------------------------------------------

def in_thread(function, *args, timeout: float = 10.0):
    """function(*args) in a thread: (True, result or exception), or (False, None) if it
    is still waiting after ``timeout`` (the thread is left blocked: a daemon)."""
    box = {}

    def run():
        try:
            box["value"] = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return ("value" in box), box.get("value")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_token_file_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    done, value = in_thread(load_or_create_token, fifo)
    if not done:  # unblock the reader left waiting, so the test run can end
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert done, "reading the token file waited on the FIFO"
    assert isinstance(value, InputError), value
    assert "FIFO" in str(value) and str(fifo) in str(value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_serve_with_a_fifo_token_file_exits_2_with_one_line(tmp_path, capsys):
    from engine.cli import main

    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    done, code = in_thread(main, ["serve", "--port", "0", "--token-file", str(fifo),
                                  "--output-dir", str(tmp_path / "out")], timeout=60)
    if not done:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert done, "serve waited on the FIFO"
    assert code == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "FIFO" in said[0] and "not a regular file" in said[0], said


def test_a_folder_as_token_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        load_or_create_token(tmp_path)


# --- item 9: what is wrong with an extent ----------------------------------------------------

@pytest.mark.parametrize("bbox,words", [
    ([447300.0, 5411000.0, 447000.0, 5411300.0], ["inverted", "xmin 447300", "xmax 447000"]),
    ([447000.0, 5411300.0, 447300.0, 5411000.0], ["inverted", "ymin 5.4113e+06"]),
    ([447000.0, 5411000.0, 447000.0, 5411300.0], ["zero area", "width is 0"]),
    ([float("nan"), 5411000.0, 447300.0, 5411300.0], ["xmin", "not a number"]),
    ([447000.0, 5411000.0, float("inf"), 5411300.0], ["xmax", "infinite"]),
    ([447000.0, -float("inf"), 447300.0, 5411300.0], ["ymin", "infinite"]),
])
def test_a_bad_extent_is_422_saying_what_is_wrong(service, bbox, words):
    status, body = service.submit(job(bbox=bbox))
    assert status == 422, body
    assert body["error_kind"] == "bad_input"
    for word in words:
        assert word in body["detail"], body["detail"]
    assert "empty" not in body["detail"]


# --- item 10: control characters and the prompt's length ------------------------------------

@pytest.mark.parametrize("field,value,words", [
    ("prompt", "a park\x00 at night", ["U+0000", "position 7"]),
    ("prompt", "a park \x1b[31m", ["U+001B"]),
    ("negative_prompt", "blur\x07", ["negative prompt", "U+0007"]),
    ("prompt", "a park \ud800", ["prompt"]),  # (pydantic: not a valid string)
])
def test_control_characters_in_a_prompt_are_422(service, field, value, words):
    status, body = service.submit(job(**{field: value}))
    assert status == 422, body
    assert body["error_kind"] == "bad_input"
    for word in words:
        assert word in body["detail"], body["detail"]


def test_control_characters_in_a_region_or_edit_prompt_are_422(service):
    region = {"geometry": {"type": "Polygon", "coordinates": [[[8.29, 48.85], [8.30, 48.85],
                                                               [8.30, 48.86], [8.29, 48.85]]]},
              "prompt": "water\x00"}
    status, body = service.submit(job(regions=[region]))
    assert status == 422 and "U+0000" in body["detail"], body
    status, body = service.submit({"type": "extend", "raster": "/nowhere.tif", "by": 100,
                                   "side": "east", "prompt": "fields\x00"})
    assert status == 422 and "U+0000" in body["detail"], body


def test_a_multi_line_prompt_is_accepted(service):
    status, body = service.submit(job(prompt="a park\nwith a pond,\tsummer\r\n", out="ml.tif"))
    assert status == 202, body


# --- item 11: the name a demo job really writes -----------------------------------------------

def test_a_name_that_fits_only_without_the_demo_suffix_is_422_at_submission(service, out):
    stem = "n" * (255 - len(".tif") - 10)  # 241 + .tif: fits; + .pipeline-check: 270 bytes
    status, body = service.submit(job(out=f"{stem}.tif"))
    assert status == 422, body
    assert body["error_kind"] == "bad_input"
    assert "pipeline-check" in body["detail"] and "shorter" in body["detail"], body["detail"]
    assert list(out.iterdir()) == []
    status, body = service.submit(job(out=f"{'n' * (255 - len('.pipeline-check.tif'))}.tif"))
    assert status == 202, body  # the longest name whose demo name still fits


def test_a_candidate_name_past_the_limit_is_422_at_submission(service):
    stem = "c" * (255 - len(".tif") - 1)  # fits, but not with _c2
    status, body = service.submit(job(out=f"{stem}.tif", candidates=2, keep_candidates=True))
    assert status == 422 and "_c<K>" in body["detail"], body


# --- item 12: the HTTP layer's own answers ---------------------------------------------------

@pytest.mark.parametrize("request_bytes,reason", [
    (b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", "Host"),
    (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n", "Host"),
    (b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
     b"Content-Length: ten\r\n\r\n{}", "Content-Length"),
    (b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "Content-Length"),
])
def test_malformed_http_is_a_json_400_with_an_error_kind(service, request_bytes, reason):
    status, headers, body = service.send(request_bytes)
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["error_kind"] == "bad_input"
    assert reason in answer["detail"], answer
    assert int(headers["content-length"]) == len(body)


@pytest.mark.parametrize("path", ["/jobs", "/health"])
def test_head_answers_like_get_without_a_body(service, path):
    _, get_headers, get_body = service.request("GET", path)
    status, headers, body = service.request("HEAD", path)
    assert status == 200, body
    assert body == b""
    assert headers["content-type"] == get_headers["content-type"] == "application/json"
    if path == "/jobs":  # (the /health body changes between two calls)
        assert int(headers["content-length"]) == len(get_body)


def test_allow_lists_head_with_get(service):
    status, headers, body = service.request("PUT", "/jobs", b"{}")
    assert status == 405, body
    assert set(headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    status, headers, body = service.request("HEAD", "/jobs/0123456789abcdef")
    assert status == 404 and body == b""  # HEAD of an unknown job: GET's 404, headers only


def test_openapi_describes_the_error_answers(service):
    status, _, body = service.request("GET", "/openapi.json")
    assert status == 200
    spec = json.loads(body)
    submit = spec["paths"]["/jobs"]["post"]["responses"]
    for code in ("400", "404", "413", "415", "422", "429"):
        assert code in submit, sorted(submit)
        ref = submit[code]["content"]["application/json"]["schema"]["$ref"]
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert {"detail", "error_kind"} <= set(schema["required"]), schema
    for path, method, code in (("/jobs/{job_id}", "get", "404"),
                               ("/jobs/{job_id}/file", "get", "410"),
                               ("/health", "get", "400")):
        assert code in spec["paths"][path][method]["responses"], (path, method)


def test_an_extend_job_checks_its_demo_name_at_submission_too(service, out):
    from conftest import SHARED_RASTERS

    stem = "e" * (255 - len(".tif") - 10)
    status, body = service.submit({
        "type": "extend", "raster": str(SHARED_RASTERS / "RGB.byte.tif"), "by": "64px",
        "side": "east", "prompt": "fields", "steps": 1, "out": f"{stem}.tif"})
    assert status == 422, body
    assert "pipeline-check" in body["detail"] and "shorter" in body["detail"], body["detail"]
    assert list(out.iterdir()) == []
