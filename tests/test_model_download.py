"""Model download into the Hugging Face cache, against a fake hub on loopback (tests/fake_hub.py):
resume after a cut, checksums, pickles refused, offline without a hang; and the engine's own
huggingface_hub-based resolver must find and load what was downloaded."""

from __future__ import annotations

import hashlib
import socket
import time

import pytest
from fake_hub import COMMIT, FakeHub, repo_from_folder

from text2earth_qgis.core.setup.model_download import (
    PATTERNS,
    ChecksumError,
    DownloadError,
    OfflineError,
    UnsafeWeightsError,
    cached_snapshot,
    check_model_folder,
    download_model,
    repo_folder,
)

REPO = "lcybuaa/Text2Earth"
UNET = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture()
def files(tiny_t2i):
    repo = repo_from_folder(tiny_t2i)
    # What the real repository has besides: the authors' code, a pickle copy, a readme.
    repo["pipeline_text2earth_diffusion.py"] = b"import os  # never fetched\n"
    repo["unet/diffusion_pytorch_model.bin"] = b"\x80\x04pickle"
    repo["README.md"] = b"# Text2Earth\n"
    return repo


def fetched(hub):
    return [path.split(f"/resolve/{COMMIT}/", 1)[1] for path, _ in hub.requests
            if "/resolve/" in path]


def test_download_resumes_a_cut_connection_and_the_engine_loads_the_cache(files, tmp_path):
    from engine.model.checkpoint import load_model, resolve_checkpoint

    cache = tmp_path / "hub"
    seen = []
    with FakeHub({REPO: files}) as hub:
        hub.cut_after[UNET] = 100_000
        snapshot = download_model(REPO, cache, endpoint=hub.url, on_progress=seen.append)
    # The cut file was asked for again from where it broke, not from the start.
    assert (f"/{REPO}/resolve/{COMMIT}/{UNET}", "bytes=100000-") in hub.requests
    wanted = {p for p in files if p.endswith((".json", ".txt", ".safetensors"))
              and (p == "model_index.json" or "/" in p)}
    assert set(fetched(hub)) == wanted  # no .py, no .bin, no README
    assert seen[-1].done == seen[-1].total == sum(len(files[p]) for p in wanted)
    # Blobs are named after the sha256 of their content, as the hub library names them.
    blob = (snapshot / UNET).resolve()
    assert blob.parent == repo_folder(cache, REPO) / "blobs"
    assert blob.name == hashlib.sha256(files[UNET]).hexdigest()
    assert (repo_folder(cache, REPO) / "refs" / "main").read_text() == COMMIT
    assert cached_snapshot(REPO, cache) == snapshot

    checkpoint = resolve_checkpoint(REPO, offline=True, cache_dir=cache)
    assert checkpoint.source == "hub cache" and checkpoint.path == snapshot
    model = load_model(checkpoint=checkpoint, device="cpu", precision="fp32")
    digest = hashlib.sha256()  # independently: names and sha256 of the original files
    for path in sorted(p for p in wanted if p.endswith(".safetensors")):
        folder, name = path.split("/")
        digest.update(f"{folder}/{name}:{hashlib.sha256(files[path]).hexdigest()}\n".encode())
    assert model.weights_sha256 == digest.hexdigest()


def test_a_broken_download_resumes_in_the_next_run(files, tmp_path):
    cache = tmp_path / "hub"
    with FakeHub({REPO: files}) as hub:
        hub.cut_after[UNET] = 50_000
        with pytest.raises(DownloadError, match="broke off.*resumes"):
            download_model(REPO, cache, endpoint=hub.url, retries=0)
        assert cached_snapshot(REPO, cache) is None  # no ref names an incomplete snapshot
        partial = repo_folder(cache, REPO) / "blobs" / (
            hashlib.sha256(files[UNET]).hexdigest() + ".incomplete")
        assert partial.stat().st_size == 50_000
        before = len(hub.requests)
        snapshot = download_model(REPO, cache, endpoint=hub.url, retries=0)
        again = [r for r in hub.requests[before:] if "/resolve/" in r[0]]
    assert (f"/{REPO}/resolve/{COMMIT}/{UNET}", "bytes=50000-") in again
    assert (snapshot / UNET).read_bytes() == files[UNET]
    assert not check_model_folder(snapshot)


def test_a_corrupted_file_is_rejected_and_never_enters_the_cache(files, tmp_path):
    cache = tmp_path / "hub"
    with FakeHub({REPO: files}) as hub:
        hub.corrupt.add(UNET)
        with pytest.raises(ChecksumError, match="arrived corrupted"):
            download_model(REPO, cache, endpoint=hub.url)
    blobs = repo_folder(cache, REPO) / "blobs"
    assert hashlib.sha256(files[UNET]).hexdigest() not in {p.name.split(".")[0]
                                                           for p in blobs.iterdir()}
    assert cached_snapshot(REPO, cache) is None


def test_pickle_only_weights_are_refused_before_any_download(files, tmp_path):
    files = {p: d for p, d in files.items() if p != UNET}  # the unet only as .bin
    with FakeHub({REPO: files}) as hub:
        with pytest.raises(UnsafeWeightsError, match=r"unet.*pickle.*safetensors"):
            download_model(REPO, tmp_path / "hub", endpoint=hub.url)
    assert fetched(hub) == []


def test_offline_or_silent_hub_gives_the_command_fast(tmp_path):
    cache = tmp_path / "hub"
    start = time.monotonic()
    with pytest.raises(OfflineError) as refused:
        download_model(REPO, cache, endpoint="http://127.0.0.1:9")
    assert time.monotonic() - start < 5
    assert f'hf download {REPO} --include "*.safetensors" "*.json" "*.txt"' in str(refused.value)
    assert refused.value.command.startswith(f"hf download {REPO}")
    assert str(cache) in refused.value.command  # fills this cache, not the default one
    silent = socket.socket()  # accepts connections (backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        start = time.monotonic()
        with pytest.raises(OfflineError, match="Offline / model missing"):
            download_model(REPO, cache, endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}",
                           timeout=0.5)
        assert time.monotonic() - start < 5
    finally:
        silent.close()


def test_patterns_are_the_engines_and_local_folders_are_checked(tiny_t2i, tmp_path):
    from engine.model.checkpoint import HUB_PATTERNS

    assert PATTERNS == HUB_PATTERNS
    assert check_model_folder(tiny_t2i) == []
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet").mkdir()
    problems = check_model_folder(tmp_path)
    assert "unet has no .safetensors weights" in problems
    assert "the vae folder is missing" in problems
