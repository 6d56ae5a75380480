"""The CPU's compiled path (issue "Speed", goal 1): inductor with frozen weights, bf16, the
compiled UNet's image within the bf16 tolerance of the eager one, the compile recorded in the
user's cache so that the next start says so."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

from engine.model import compile_cache
from engine.model.checkpoint import load_model


@functools.cache
def torch_default_after_import() -> str:
    """What the variable holds in a real engine process once diffusers is imported (torch
    writes its own default there, under the temp folder), read from a fresh one."""
    env = {k: v for k, v in os.environ.items() if k != compile_cache.INDUCTOR_CACHE_ENV}
    probe = subprocess.run(
        [sys.executable, "-c", "import os, diffusers.models; "
         f"print(os.environ.get({compile_cache.INDUCTOR_CACHE_ENV!r}))"],
        capture_output=True, text=True, env=env, timeout=120, check=True)
    return probe.stdout.strip().splitlines()[-1]


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # As a service has it by the time it compiles; monkeypatch restores the earlier state.
    monkeypatch.setenv(compile_cache.INDUCTOR_CACHE_ENV, torch_default_after_import())
    return tmp_path / "cache"


def test_inductor_is_pointed_at_the_users_cache_unless_the_user_chose_a_folder(user_cache,
                                                                             tmp_path,
                                                                             monkeypatch):
    ours = user_cache / "text2earth" / "compiled" / "inductor"
    variable = compile_cache.INDUCTOR_CACHE_ENV
    # torch's default (a folder a reboot empties) was not the user's choice.
    assert torch_default_after_import().startswith(tempfile.gettempdir())
    assert compile_cache.use_persistent_cache() == ours and os.environ[variable] == str(ours)
    monkeypatch.delenv(variable)
    assert compile_cache.use_persistent_cache() == ours and os.environ[variable] == str(ours)
    monkeypatch.setenv(variable, str(tmp_path / "mine"))
    assert compile_cache.use_persistent_cache() == tmp_path / "mine"
    assert os.environ[variable] == str(tmp_path / "mine")


def image(model, seed=3):
    return np.asarray(model.pipeline("a park", level=17, num_inference_steps=2,
                                     generator=torch.Generator("cpu").manual_seed(seed)
                                     ).images[0]).astype(np.int16)


def test_compiled_bf16_unet_on_cpu_matches_eager_and_is_remembered(tiny_t2i, user_cache):
    eager = load_model(str(tiny_t2i), "cpu", precision="bf16", compile=False)
    compiled = load_model(str(tiny_t2i), "cpu", precision="bf16", compile=True)
    assert compiled.speed["compiled"] and compiled.speed["compile_cached"] is False
    assert type(compiled.pipeline.unet).__name__ == "CompiledOnce"
    reference = image(eager)
    with torch.no_grad():
        got = image(compiled)
    diff = np.abs(got - reference)
    # The tolerance the suite holds bf16 to against fp32 (test_speed): compiling reorders
    # bf16 sums, it does not change the arithmetic.
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8, (diff.mean(), diff.max())
    assert got.std() > 1 and compiled.pipeline.unet.state == "compiled"
    # Inductor's kernels went to the user's cache, not /tmp; the compile is on record.
    ours = user_cache / "text2earth" / "compiled" / "inductor"
    assert os.environ[compile_cache.INDUCTOR_CACHE_ENV] == str(ours)
    assert any(path.suffix == ".so" for path in ours.rglob("*")), sorted(ours.rglob("*"))[:20]
    again = load_model(str(tiny_t2i), "cpu", precision="bf16", compile=True)
    assert again.speed["compile_cached"] is True
    # Another precision is another compiled model.
    assert load_model(str(tiny_t2i), "cpu", precision="fp32",
                      compile=True).speed["compile_cached"] is False
