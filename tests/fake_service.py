"""A stand-in for the engine's job service on loopback, answering as docs/service-api.md and
the helpers' contracts say for variations (candidates) and init rasters: /health, POST /jobs,
long-polled status, /result with "score" and "candidates" listed best first, /file and
/file?candidate=K (404 with error_kind "not_kept" for a variation not written).

It runs no model: each candidate's file is made by ``make_file(job, index, path)`` (bytes by
default; a probe in QGIS writes real GeoTIFFs with GDAL). ``scores`` gives candidate K's
Git-RSCLIP score (None: no rank model, index order). ``remote=True`` reports paths the client
cannot see, so files come over HTTP as from an engine on another machine.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_CANDIDATES = 8


def default_file(job: dict, index: int, path: Path) -> None:
    path.write_bytes(b"II*\0candidate %d of %s" % (index, job["prompt"].encode()))


class FakeService:
    def __init__(self, staging: Path, scores: dict[int, float] | None = None,
                 remote: bool = False,
                 make_file: Callable[[dict, int, Path], None] = default_file,
                 seed_step: int = 1000, tags: dict | None = None,
                 older: bool = False) -> None:
        self.staging = Path(staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.scores = scores
        self.remote = remote
        self.make_file = make_file
        self.seed_step = seed_step
        self.tags = tags or {}
        self.older = older  # answer as an engine from before these fields existed
        self.jobs: list[dict] = []  # bodies as received
        self.results: dict[str, dict] = {}
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeService:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ----- what the engine would do ----------------------------------------------------

    def refuse_as_older(self, body: dict) -> list[dict]:
        """An engine before the contracts: pydantic's strict model, extra fields forbidden,
        scene_method one of three (the errors list engine/service/app.py sends)."""
        errors = [{"field": name, "message": "Extra inputs are not permitted"}
                  for name in ("candidates", "keep_candidates", "init_raster", "strength")
                  if name in body]
        if body.get("scene_method", "auto") not in ("auto", "outpaint", "joint"):
            errors.append({"field": "scene_method",
                           "message": "Input should be 'auto', 'outpaint' or 'joint'"})
        return errors

    def refuse(self, body: dict) -> str | None:
        """The service's validation of the fields the contracts add (one sentence)."""
        count = body.get("candidates", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 8:
            return "candidates: between 1 and 8"
        if not isinstance(body.get("keep_candidates", False), bool):
            return "keep_candidates: true or false"
        strength = body.get("strength", 0.6)
        if not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            return "strength: between 0 and 1"
        raster = body.get("init_raster")
        if raster is not None and not (Path(raster).is_absolute() and Path(raster).is_file()):
            return f"init_raster {raster} is not a raster file"
        if body.get("scene_method", "auto") not in ("auto", "outpaint", "joint", "cascade"):
            return "scene_method: auto, outpaint, joint or cascade"
        return None

    def run(self, job_id: str, body: dict) -> dict:
        count = body.get("candidates", 1)
        keep = body.get("keep_candidates", False) or (self.scores is None and count > 1)
        seed = body.get("seed") or 0
        entries = [{"index": k, "seed": seed + (k - 1) * self.seed_step,
                    "score": None if self.scores is None else self.scores[k]}
                   for k in range(1, count + 1)]
        if self.scores is not None:
            entries.sort(key=lambda e: -e["score"])
        stem = job_id
        files = {}
        for rank, entry in enumerate(entries):
            if rank == 0:
                name = f"{stem}.tif"
            elif keep:
                name = f"{stem}_c{entry['index']}.tif"
            else:
                entry["path"] = None
                continue
            path = self.staging / name
            self.make_file(body, entry["index"], path)
            files[entry["index"]] = path
            entry["path"] = str(self.shown(path))
        best = entries[0]
        tags = {"TEXT2EARTH_PROMPT": body["prompt"], "TEXT2EARTH_SEED": str(best["seed"]),
                "TEXT2EARTH_LEVEL": str(body.get("level", 16)),
                "TEXT2EARTH_CANDIDATES": json.dumps(
                    [{k: e[k] for k in ("index", "seed", "score")} for e in entries]),
                **self.tags}
        if best["score"] is not None:
            tags["TEXT2EARTH_RSCLIP_SCORE"] = f"{best['score']:.4f}"
        result = {"id": job_id, "path": best["path"], "bbox": body["bbox"],
                  "bounds": body["bbox"], "crs_authid": body["crs"], "level": body.get("level"),
                  "seed": best["seed"], "score": best["score"], "candidates": entries,
                  "tags": tags, "notes": []}
        self.results[job_id] = {"result": result, "files": files}
        return result

    def shown(self, path: Path) -> Path:
        return Path("/engine-machine/outputs") / path.name if self.remote else path

    # ----- HTTP ----------------------------------------------------------------------------

    def _handler(self):
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send_json(self, payload, status: int = 200) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def error(self, status: int, detail: str, kind: str) -> None:
                self.send_json({"detail": detail, "error_kind": kind}, status)

            def do_GET(self):  # noqa: N802 - http.server's name
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                parts = url.path.strip("/").split("/")
                service.requests.append(self.path)
                if parts == ["health"]:
                    return self.send_json({"service": "text2earth", "api_version": 1,
                                           "device": {"type": "cpu", "name": "fake CPU"},
                                           "models": [], "max_pixels": 25000 * 25000})
                if len(parts) < 2 or parts[0] != "jobs" or parts[1] not in service.results:
                    return self.error(404, "no such job", "not_found")
                job = service.results[parts[1]]
                if len(parts) == 2:
                    return self.send_json({"id": parts[1], "state": "done", "version": 3,
                                           "step": 2, "steps": 2})
                if parts[2] == "result":
                    return self.send_json(job["result"])
                if parts[2] == "preview":
                    return self.error(404, "no preview", "not_found")
                if parts[2] == "file":
                    index = int(query["candidate"][0]) if "candidate" in query else None
                    if index is None:
                        path = job["files"][job["result"]["candidates"][0]["index"]]
                    elif index not in job["files"]:
                        return self.error(404, f"variation {index} of job {parts[1]} was not "
                                          "kept", "not_kept")
                    else:
                        path = job["files"][index]
                    data = path.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "image/tiff")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                return self.error(404, "not found", "not_found")

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.requests.append(self.path)
                service.jobs.append(body)
                errors = service.refuse_as_older(body) if service.older else []
                if errors:
                    return self.send_json({
                        "detail": "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                        "error_kind": "bad_input", "errors": errors}, 422)
                problem = service.refuse(body)
                if problem:
                    return self.error(422, problem, "bad_input")
                job_id = f"job{len(service.jobs)}"
                service.run(job_id, body)
                return self.send_json({"id": job_id, "state": "queued"})

            def do_DELETE(self):  # noqa: N802
                return self.send_json({})

        return Handler
