"""Shared fixtures: tiny random checkpoints of the real architecture, written once per run."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_RASTERS = ROOT.parent / "shared" / "data" / "rasters"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never reach for the network: the hub is looked up in the local cache only.
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_t2i(tmp_path_factory) -> Path:
    from engine.model.tiny_checkpoint import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "text2earth-tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_inpaint(tmp_path_factory) -> Path:
    from engine.model.tiny_checkpoint import write_checkpoint

    return write_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "text2earth-inpainting-tiny", inpainting=True, seed=1
    )


@pytest.fixture(scope="session")
def tiny_sd2(tmp_path_factory) -> Path:
    """A plain SD2-style checkpoint: no class embedding, so no level input."""
    from engine.model.tiny_checkpoint import write_checkpoint

    return write_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "sd2-tiny", level_embedding=False, seed=2
    )


@pytest.fixture(scope="session")
def t2i_model(tiny_t2i):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_t2i), "cpu", precision="fp32")  # the exact mode


@pytest.fixture(scope="session")
def inpaint_model(tiny_inpaint):
    from engine.model.checkpoint import load_model

    return load_model(str(tiny_inpaint), "cpu", precision="fp32")


@contextmanager
def tmpfs(folder: Path, options: str):
    """A real small or read-only file system: a tmpfs mounted at ``folder`` with ``options``
    ("size=64k", "ro,size=1m"), unmounted after; skips where mounting is not allowed (needs
    root, which the test machines have)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
