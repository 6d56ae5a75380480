"""Candidates through the job service: fields, result, /file?candidate=K (a real service)."""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import rank_support
from rank_support import read_rgb, reference_probabilities

from text2earth_qgis.core.service.client import start_local_service

tiny_rank = rank_support.tiny_rank  # the shared fixture
ROOT = Path(__file__).resolve().parents[1]
BBOX = [447000.0, 5411000.0, 447150.0, 5411150.0]
PROMPT = "a harbor with ships"


@pytest.fixture(scope="module")
def service(tiny_t2i, tiny_rank, tmp_path_factory):
    out = tmp_path_factory.mktemp("svc-out").resolve()
    svc = start_local_service(
        python=sys.executable, output_dirs=[str(out)], model=str(tiny_t2i), device="cpu",
        timeout=120, env={"PYTHONPATH": str(ROOT), "TEXT2EARTH_RANK_MODEL": str(tiny_rank)},
        extra_args=["--precision", "fp32"])
    yield svc, out
    svc.stop()


def get(svc, path: str) -> tuple[int, bytes]:
    url = urllib.parse.urlsplit(svc.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def run(svc, **fields) -> dict:
    body = {"bbox": BBOX, "crs": "EPSG:32632", "prompt": PROMPT, "level": 17, "steps": 2,
            "seed": 4} | fields
    job = svc.client.submit(body)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = svc.client.status(job["id"])
        if status["state"] in ("done", "failed", "cancelled"):
            assert status["state"] == "done", status
            return svc.client.result(job["id"])
        time.sleep(0.2)
    raise AssertionError("job did not end")


def test_kept_candidates_best_first_and_served(service, tiny_rank):
    svc, _ = service
    result = run(svc, candidates=3, keep_candidates=True, out="three.tif")
    entries = result["candidates"]
    assert [e["index"] for e in entries] != [] and len(entries) == 3
    assert entries[0]["path"] == result["path"]
    scores = [e["score"] for e in entries]
    assert scores == sorted(scores, reverse=True) and result["score"] == scores[0]
    for e in entries:
        want = reference_probabilities(tiny_rank, [read_rgb(e["path"])], [PROMPT])[0, 0]
        assert e["score"] == pytest.approx(want, abs=1e-3)
        assert Path(e["path"]).name == ("three.tif" if e is entries[0]
                                        else f"three_c{e['index']}.tif")
        status, data = get(svc, f"/jobs/{result['id']}/file?candidate={e['index']}")
        assert status == 200 and data == Path(e["path"]).read_bytes()
    assert json.loads(result["tags"]["TEXT2EARTH_CANDIDATES"])[0]["index"] == entries[0]["index"]
    status, data = get(svc, f"/jobs/{result['id']}/file?candidate=9")
    assert status == 422


def test_unkept_candidate_is_404_not_kept_and_none_means_no_score(service):
    svc, _ = service
    result = run(svc, candidates=2, out="two.tif")
    loser = result["candidates"][1]
    assert loser["path"] is None and result["candidates"][0]["path"] == result["path"]
    status, data = get(svc, f"/jobs/{result['id']}/file?candidate={loser['index']}")
    assert status == 404 and json.loads(data)["error_kind"] == "not_kept"
    plain = run(svc, rank_model="none", out="plain.tif")
    assert plain["score"] is None
    assert plain["candidates"] == [{"index": 1, "seed": 4, "score": None,
                                    "path": plain["path"]}]
    scored = run(svc, out="scored.tif")  # the service's default rank model: a score
    assert isinstance(scored["score"], float)
    assert "TEXT2EARTH_RSCLIP_SCORE" in scored["tags"]


def test_bad_candidate_fields_are_422(service, tmp_path):
    svc, _ = service
    for fields in ({"candidates": 0}, {"candidates": 9}, {"rank_model": str(tmp_path / "no")}):
        body = {"bbox": BBOX, "crs": "EPSG:32632", "prompt": PROMPT, "level": 17} | fields
        url = urllib.parse.urlsplit(svc.url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        conn.request("POST", "/jobs", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 422, (fields, response.read())
        conn.close()
