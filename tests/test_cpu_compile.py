"""The CPU's compiled path (issue "Speed", goal 1): inductor with frozen weights, bf16, the
compiled UNet's image within the bf16 tolerance of the eager one, the compile recorded in the
user's cache so that the next start says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model import compile_cache
from engine.model.checkpoint import load_model


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # set, then removed: monkeypatch restores the variable's earlier state (even absent)
    monkeypatch.setenv(compile_cache.INDUCTOR_CACHE_ENV, "")
    monkeypatch.delenv(compile_cache.INDUCTOR_CACHE_ENV)
    return tmp_path / "cache"


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
    assert compile_cache.use_persistent_cache() == user_cache / "text2earth" / "compiled" / \
        "inductor"
    assert any((user_cache / "text2earth" / "compiled" / "inductor").iterdir())
    again = load_model(str(tiny_t2i), "cpu", precision="bf16", compile=True)
    assert again.speed["compile_cached"] is True
    # Another precision is another compiled model.
    assert load_model(str(tiny_t2i), "cpu", precision="fp32",
                      compile=True).speed["compile_cached"] is False
