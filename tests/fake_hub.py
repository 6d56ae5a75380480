"""A stand-in for the Hugging Face hub on loopback: the few endpoints a download uses.

Serves a repository made from files on disk with the hub's API shapes (revision, recursive
tree with git blob ids and LFS sha256), `resolve` URLs with Range support, and faults a test
asks for: cut the connection after N bytes, serve wrong bytes. Hashes are computed here with
hashlib from the files themselves, independently of the downloader.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt", ".pkl")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos  # repo id -> {path: content}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_after: dict[str, int] = {}  # file path -> bytes sent before the first cut
        self.corrupt: set[str] = set()  # file paths served with one byte flipped
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def tree(self, repo: str) -> list[dict]:
        out = []
        for path, data in sorted(self.repos[repo].items()):
            entry = {"type": "file", "path": path, "size": len(data)}
            if path.endswith(LFS_SUFFIXES):
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:" \
                          f"{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n".encode()
                entry["oid"] = git_blob_id(pointer)
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": len(pointer)}
            else:
                entry["oid"] = git_blob_id(data)
            out.append(entry)
        return out

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send_json(self, payload) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 - http.server's name
                url = urllib.parse.urlsplit(self.path)
                path = urllib.parse.unquote(url.path)
                hub.requests.append((path, self.headers.get("Range")))
                for repo in hub.repos:
                    if path == f"/api/models/{repo}/revision/main":
                        return self.send_json({"id": repo, "sha": COMMIT})
                    if path == f"/api/models/{repo}/tree/{COMMIT}":
                        return self.send_json(hub.tree(repo))
                    prefix = f"/{repo}/resolve/{COMMIT}/"
                    if path.startswith(prefix) and path[len(prefix):] in hub.repos[repo]:
                        return self.send_file(path[len(prefix):], hub.repos[repo])
                self.send_error(404)

            def send_file(self, name: str, files: dict) -> None:
                data = files[name]
                if name in hub.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                ranged = self.headers.get("Range")
                if ranged and ranged.startswith("bytes="):
                    start = int(ranged[6:].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = hub.cut_after.pop(name, None)
                if cut is not None:  # promise everything, send part, drop the connection
                    self.wfile.write(data[start:start + cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        return Handler


def repo_from_folder(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}
