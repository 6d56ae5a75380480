"""The weights' hash remembered per file identity: a model folder is hashed once, not at every
start (3.4 GB took ~3 s before the first image), and a changed file is hashed again."""

from __future__ import annotations

import hashlib
import json
import os

from engine.model import checkpoint


def test_a_files_hash_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"first weights" * 1000)
    assert checkpoint._file_sha256(weights) == hashlib.sha256(b"first weights" * 1000).hexdigest()
    memo_path = tmp_path / "cache" / "text2earth" / "weights-sha256.json"
    memo = json.loads(memo_path.read_text())
    # A second call reads the memo, not the file: a planted answer comes back.
    memo[str(weights.resolve())][-1] = "0" * 64
    memo_path.write_text(json.dumps(memo))
    assert checkpoint._file_sha256(weights) == "0" * 64
    # The same size, a new content and time: hashed again.
    weights.write_bytes(b"other weights" * 1000)
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert checkpoint._file_sha256(weights) == hashlib.sha256(b"other weights" * 1000).hexdigest()
    # A torn memo is only a miss.
    memo_path.write_text("{not json")
    assert checkpoint._file_sha256(weights) == hashlib.sha256(b"other weights" * 1000).hexdigest()
