"""Git-RSCLIP loading and scoring, held to transformers' own SigLIP computation."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import rank_support
import torch
from rank_support import reference_probabilities

from engine.errors import CheckpointError, InputError, ModelNotFoundError
from engine.quality.rank_model import (
    RANK_MODEL,
    RANK_MODEL_ENV,
    load_rank_model,
    local_rank_model,
    resolve_rank_model,
)

tiny_rank = rank_support.tiny_rank  # the shared fixture


@pytest.fixture(scope="module")
def rank(tiny_rank):
    return load_rank_model(str(tiny_rank))


def images(n: int, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(256, 256), (200, 180), (64, 96), (300, 250)]
    return [rng.integers(0, 256, (*shapes[i % 4], 3), dtype=np.uint8) for i in range(n)]


def test_tiny_checkpoint_has_git_rsclip_layout(tiny_rank):
    config = json.loads((tiny_rank / "config.json").read_text())
    assert config["model_type"] == "siglip"
    assert (tiny_rank / "spiece.model").is_file()
    assert any(tiny_rank.glob("*.safetensors"))
    assert not list(tiny_rank.glob("*.bin"))
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_rank / "spiece.model"))
    assert sp.id_to_piece(1) == "</s>" and sp.id_to_piece(2) == "<unk>"


def test_score_equals_transformers_siglip(tiny_rank, rank):
    imgs = images(4)
    prompts = ["a river winding through a forest", "an airport with two runways",
               "farmland with green fields", "a harbor with ships"]
    ours = rank.score(imgs, prompts)
    reference = reference_probabilities(tiny_rank, imgs, prompts)
    np.testing.assert_allclose(ours, np.diag(reference), atol=1e-3)
    # The pairs differ: a test that a constant would pass is no test.
    assert np.ptp(ours) > 0.01
    table = rank.probabilities(imgs, prompts[:2])
    np.testing.assert_allclose(table, reference[:, :2], atol=1e-3)


def test_embeddings_are_the_models_features(tiny_rank, rank):
    from transformers import AutoProcessor, SiglipModel

    model = SiglipModel.from_pretrained(tiny_rank).eval()
    processor = AutoProcessor.from_pretrained(tiny_rank)
    imgs = images(2)
    with torch.no_grad():
        want_img = model.get_image_features(
            **processor(images=imgs, return_tensors="pt")).pooler_output
        want_txt = model.get_text_features(**processor(
            text=["a beach"], padding="max_length", max_length=64, return_tensors="pt")
        ).pooler_output
    torch.testing.assert_close(rank.embed_images(imgs), want_img, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rank.embed_texts(["a beach"]), want_txt, atol=1e-4, rtol=1e-4)
    assert rank.image_size == 256


def test_long_prompt_is_truncated_not_an_error(rank):
    score = rank.score(images(1), ["forest " * 200])
    assert 0.0 <= score[0] <= 1.0


def test_missing_rank_model_gives_advice(tmp_path, monkeypatch):
    monkeypatch.delenv(RANK_MODEL_ENV, raising=False)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_rank_model(None, offline=True, cache_dir=tmp_path / "empty")
    message = str(info.value)
    assert RANK_MODEL in message and "--rank-model" in message and RANK_MODEL_ENV in message
    assert "'*.model'" in message and "Git-RSCLIP" in message and "\n" not in message
    with pytest.raises(ModelNotFoundError):
        resolve_rank_model(str(tmp_path / "nowhere"))
    with pytest.raises(InputError):
        resolve_rank_model("not a hub id")


def test_env_variable_names_the_model(tiny_rank, monkeypatch):
    monkeypatch.setenv(RANK_MODEL_ENV, str(tiny_rank))
    assert resolve_rank_model().path == tiny_rank.resolve()
    assert local_rank_model().source == "local folder"
    monkeypatch.setenv(RANK_MODEL_ENV, "someone/absent-model")
    assert local_rank_model() is None  # never downloads


def test_hub_cache_layout_is_found(tiny_rank, tmp_path):
    cache = tmp_path / "hub"
    repo = cache / "models--lcybuaa--Git-RSCLIP"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / revision
    for file in tiny_rank.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snapshot / file.name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / file.name).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    checkpoint = resolve_rank_model(RANK_MODEL, offline=True, cache_dir=cache)
    assert checkpoint.source == "hub cache" and checkpoint.path == snapshot


def test_refuses_pickles_other_models_and_broken_weights(tiny_rank, tmp_path):
    pickled = shutil.copytree(tiny_rank, tmp_path / "pickled")
    for f in pickled.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(CheckpointError, match="safetensors only"):
        resolve_rank_model(str(pickled))
    clip = shutil.copytree(tiny_rank, tmp_path / "clip")
    config = json.loads((clip / "config.json").read_text())
    (clip / "config.json").write_text(json.dumps(config | {"model_type": "clip"}))
    with pytest.raises(CheckpointError, match="SigLIP"):
        resolve_rank_model(str(clip))
    broken = shutil.copytree(tiny_rank, tmp_path / "broken")
    for f in broken.glob("*.safetensors"):
        f.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="could not load the rank model"):
        load_rank_model(str(broken))
