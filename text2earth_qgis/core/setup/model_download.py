"""Download Text2Earth weights into the Hugging Face cache layout. Stdlib only (urllib).

The layout is the hub's own (models--owner--name/blobs/<hash>, snapshots/<commit>/<path>
links, refs/main), so the engine's huggingface_hub finds the files offline and other tools
share them. Only safetensors weights and their json/txt configuration are fetched; pickle
weights (.bin, .pt, .ckpt, .pkl) are refused since loading them can run code. Every file is
checked against the hash the hub lists (sha256 for weights, the git blob hash for small
files) before it enters the cache; a cut connection resumes with an HTTP Range request.
Every network call has a timeout: offline means a clear error at once, never a hang.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..service.http_open import open_http

DEFAULT_ENDPOINT = "https://huggingface.co"
MODELS = ("lcybuaa/Text2Earth", "lcybuaa/Text2Earth-inpainting")
# The engine's engine.model.checkpoint.HUB_PATTERNS (a test keeps the two equal).
PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
WEIGHT_FOLDERS = ("unet", "vae", "text_encoder")
REQUIRED_FOLDERS = WEIGHT_FOLDERS + ("tokenizer", "scheduler")
CHUNK = 1 << 20
NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout,
                  http.client.HTTPException, OSError)


class DownloadError(Exception):
    pass


class OfflineError(DownloadError):
    """The hub cannot be reached; ``command`` is what to run on a connected machine."""

    def __init__(self, message: str, command: str) -> None:
        super().__init__(message)
        self.command = command


class ChecksumError(DownloadError):
    pass


class UnsafeWeightsError(DownloadError):
    pass


class DownloadCancelled(DownloadError):  # noqa: N818 - a state, not a fault
    pass


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    git_oid: str  # sha1 of the git blob: the hash of small files
    sha256: str | None = None  # LFS files (weights): sha256 of the content

    @property
    def blob_name(self) -> str:
        # What huggingface_hub names the blob: the ETag, i.e. sha256 for LFS, else the git oid.
        return self.sha256 or self.git_oid


def default_cache_dir(env: dict | None = None) -> Path:
    """huggingface_hub's own default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/..."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def repo_folder(cache_dir: str | Path, repo: str) -> Path:
    return Path(cache_dir) / ("models--" + repo.replace("/", "--"))


def download_command(repo: str, cache_dir: str | Path | None = None) -> str:
    """What to run on a machine with internet to fill the same cache."""
    command = f'hf download {repo} --include "*.safetensors" "*.json" "*.txt"'
    if cache_dir is not None and Path(cache_dir) != default_cache_dir():
        command += f' --cache-dir "{cache_dir}"'
    return command


def offline_message(repo: str, cache_dir: str | Path | None, reason: str) -> str:
    return (
        f"Offline / model missing: the Hugging Face hub cannot be reached ({reason}), so "
        f"{repo} cannot be downloaded here. On a machine with internet run\n"
        f"    {download_command(repo, cache_dir)}\n"
        "(older tools: huggingface-cli download with the same arguments) and copy the "
        f"folder {repo_folder(cache_dir or default_cache_dir(), repo).name} into this "
        "machine's model cache, or copy a model folder here and choose it with "
        "'Use a local folder'."
    )


# ----- listing ------------------------------------------------------------------------------

def _get_json(url: str, timeout: float, repo: str, cache_dir) -> tuple[object, dict]:
    request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   "User-Agent": "text2earth-qgis"})
    try:
        with open_http(request, timeout=timeout) as response:
            return json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            raise DownloadError(f"the hub has no public model {repo}: check its name, or "
                                "whether it needs a login") from None
        raise OfflineError(offline_message(repo, cache_dir, "the hub refused the request"),
                           download_command(repo, cache_dir)) from None
    except NETWORK_ERRORS as exc:
        reason = getattr(exc, "reason", None) or exc
        raise OfflineError(offline_message(repo, cache_dir, str(reason)),
                           download_command(repo, cache_dir)) from None
    except ValueError:
        raise DownloadError(f"the hub's answer for {repo} is not JSON") from None


def _next_link(headers: dict) -> str | None:
    for part in (headers.get("Link") or headers.get("link") or "").split(","):
        if 'rel="next"' in part:
            return part.split(";")[0].strip().strip("<>")
    return None


def list_repo(repo: str, endpoint: str = DEFAULT_ENDPOINT, revision: str = "main",
              timeout: float = 20.0, cache_dir=None) -> tuple[str, list[RemoteFile]]:
    """The commit ``revision`` points at and every file of it, with sizes and hashes."""
    endpoint = endpoint.rstrip("/")
    quoted = urllib.parse.quote(revision, safe="")
    info, _ = _get_json(f"{endpoint}/api/models/{repo}/revision/{quoted}", timeout, repo,
                        cache_dir)
    commit = info.get("sha") if isinstance(info, dict) else None
    if not commit:
        raise DownloadError(f"the hub did not say which commit {repo}@{revision} is")
    files: list[RemoteFile] = []
    url: str | None = f"{endpoint}/api/models/{repo}/tree/{commit}?recursive=1"
    while url:  # the listing comes in pages for large repositories
        entries, headers = _get_json(url, timeout, repo, cache_dir)
        for entry in entries:
            if entry.get("type") != "file":
                continue
            lfs = entry.get("lfs") or {}
            files.append(RemoteFile(entry["path"], int(entry.get("size", 0)), entry["oid"],
                                    lfs.get("oid")))
        url = _next_link(headers)
        if url and url.startswith("/"):
            url = endpoint + url
    return commit, files


def select_files(files: list[RemoteFile], repo: str = "") -> list[RemoteFile]:
    """The files the engine reads; refuses a checkpoint whose weights are pickles only."""
    chosen = [f for f in files if any(fnmatch.fnmatch(f.path, p) for p in PATTERNS)]
    for folder in WEIGHT_FOLDERS:
        has_safe = any(f.path.startswith(folder + "/") and f.path.endswith(".safetensors")
                       for f in files)
        pickles = [f.path for f in files if f.path.startswith(folder + "/")
                   and f.path.lower().endswith(PICKLE_SUFFIXES)]
        if pickles and not has_safe:
            raise UnsafeWeightsError(
                f"{repo or 'the model'} offers {folder} weights only as pickle files "
                f"({', '.join(pickles)}); they can run code when loaded, so they are not "
                "downloaded: ask for a .safetensors version"
            )
    if not any(f.path == "model_index.json" for f in chosen):
        raise DownloadError(f"{repo or 'the repository'} is not a diffusers model "
                            "(no model_index.json)")
    return chosen


# ----- one file -----------------------------------------------------------------------------

def _hasher(remote: RemoteFile):
    if remote.sha256:
        return hashlib.sha256()
    digest = hashlib.sha1(usedforsecurity=False)  # git's blob id, not a security hash
    digest.update(f"blob {remote.size}\0".encode())
    return digest


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)


def fetch_file(url: str, remote: RemoteFile, blob: Path, on_bytes: Callable[[int], None],
               is_canceled: Callable[[], bool], timeout: float, retries: int) -> None:
    """Download into ``blob`` via ``blob.incomplete``, resuming it; the hash must match."""
    partial = blob.with_name(blob.name + ".incomplete")
    attempt = 0
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        if have > remote.size:
            partial.unlink()
            have = 0
        try:
            if have < remote.size or remote.size == 0:
                _fetch_range(url, partial, have, on_bytes, is_canceled, timeout)
            break
        except DownloadCancelled:
            raise
        except NETWORK_ERRORS as exc:
            attempt += 1
            if attempt > retries:
                reason = getattr(exc, "reason", None) or exc
                raise DownloadError(
                    f"the download of {remote.path} broke off ({reason}) after {retries} "
                    "retries: run Download model again, it resumes where it stopped") from None
            time.sleep(min(0.2 * 2 ** attempt, 5.0))
    digest = _hasher(remote)
    _hash_file(partial, digest)
    expected = remote.sha256 or remote.git_oid
    if digest.hexdigest() != expected or partial.stat().st_size != remote.size:
        partial.unlink()
        raise ChecksumError(
            f"{remote.path} arrived corrupted (checksum {digest.hexdigest()[:12]}…, expected "
            f"{expected[:12]}…); it was discarded: run Download model again")
    os.replace(partial, blob)


def _fetch_range(url: str, partial: Path, have: int, on_bytes, is_canceled, timeout) -> None:
    headers = {"User-Agent": "text2earth-qgis", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = open_http(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # nothing left to send: the partial file is whole
            return
        if exc.code in (401, 403, 404):
            raise DownloadError(f"{url} is not available: the hub no longer has this "
                                "file, or it needs a login") from None
        raise
    with response:
        mode = "ab" if have and response.status == 206 else "wb"
        if mode == "wb" and have:
            on_bytes(-have)  # the server ignored the range: those bytes come again
        expected = response.headers.get("Content-Length")
        received = 0
        with open(partial, mode) as fh:
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                received += len(chunk)
                on_bytes(len(chunk))
                if is_canceled():
                    raise DownloadCancelled("download cancelled; it resumes next time")
        # http.client ends a short body silently: a dropped connection looks like the end.
        if expected is not None and received < int(expected):
            raise http.client.IncompleteRead(b"", int(expected) - received)


def _link(snapshot_file: Path, blob: Path) -> None:
    snapshot_file.parent.mkdir(parents=True, exist_ok=True)
    if snapshot_file.is_symlink() or snapshot_file.exists():
        snapshot_file.unlink()
    try:
        snapshot_file.symlink_to(os.path.relpath(blob, snapshot_file.parent))
    except OSError:  # Windows without the symlink privilege: the hub library copies too
        shutil.copyfile(blob, snapshot_file)


# ----- a whole model ------------------------------------------------------------------------

@dataclass
class Progress:
    done: int
    total: int
    file: str


def download_model(
    repo: str,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    revision: str = "main",
    on_progress: Callable[[Progress], None] | None = None,
    is_canceled: Callable[[], bool] = lambda: False,
    timeout: float = 20.0,
    retries: int = 3,
) -> Path:
    """Fetch ``repo`` into the cache; the snapshot folder (a diffusers model folder) back."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    commit, files = list_repo(repo, endpoint, revision, timeout, cache_dir)
    wanted = select_files(files, repo)
    folder = repo_folder(cache_dir, repo)
    blobs = folder / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    total = sum(f.size for f in wanted)
    done = sum(f.size for f in wanted if (blobs / f.blob_name).is_file())
    partial = sum((blobs / (f.blob_name + ".incomplete")).stat().st_size for f in wanted
                  if (blobs / (f.blob_name + ".incomplete")).is_file())
    free = shutil.disk_usage(blobs).free
    if total - done - partial > free:
        raise DownloadError(f"not enough disk space in {cache_dir}: {repo} needs "
                            f"{(total - done - partial) / 1e9:.1f} GB more, {free / 1e9:.1f} GB "
                            "are free; choose another model folder or free some space")
    done += partial
    report = on_progress or (lambda progress: None)
    snapshot = folder / "snapshots" / commit
    for remote in wanted:
        blob = blobs / remote.blob_name
        if not blob.is_file():
            def on_bytes(count: int, name: str = remote.path) -> None:
                nonlocal done
                done += count
                report(Progress(done, total, name))

            url = f"{endpoint}/{repo}/resolve/{commit}/{urllib.parse.quote(remote.path)}"
            fetch_file(url, remote, blob, on_bytes, is_canceled, timeout, retries)
        _link(snapshot / remote.path, blob)
        report(Progress(done, total, remote.path))
    refs = folder / "refs"
    refs.mkdir(exist_ok=True)
    tmp = refs / f".{revision}.tmp"
    tmp.write_text(commit, encoding="utf-8")
    os.replace(tmp, refs / revision)  # last: the snapshot is complete when a ref names it
    return snapshot


# ----- what is there ------------------------------------------------------------------------

def check_model_folder(path: str | Path) -> list[str]:
    """What keeps a folder from being a safetensors diffusers model ([] when nothing)."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path} is not a folder"]
    problems = []
    if not (path / "model_index.json").is_file():
        problems.append("model_index.json is missing")
    for sub in REQUIRED_FOLDERS:
        if not (path / sub).is_dir():
            problems.append(f"the {sub} folder is missing")
        elif sub in WEIGHT_FOLDERS and not any((path / sub).glob("*.safetensors")):
            problems.append(f"{sub} has no .safetensors weights")
    return problems


def cached_snapshot(repo: str, cache_dir: str | Path | None = None,
                    revision: str = "main") -> Path | None:
    """The complete cached snapshot of ``repo``, or None ("offline / model missing")."""
    folder = repo_folder(cache_dir or default_cache_dir(), repo)
    try:
        commit = (folder / "refs" / revision).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    snapshot = folder / "snapshots" / commit
    return snapshot if not check_model_folder(snapshot) else None
