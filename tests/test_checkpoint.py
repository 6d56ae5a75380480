"""Finding and loading weights: local folders, the hub cache, and every way it can go wrong."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import CheckpointError, InputError, ModelNotFoundError
from engine.model.checkpoint import (
    MODEL_ENV,
    load_model,
    resolve_checkpoint,
    select_device,
    weights_sha256,
)


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_tokenizer_matches_open_clip_reference(t2i_model):
    """The CLIPTokenizer built from open_clip's BPE file tokenises exactly as OpenCLIP does."""
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer()
    ours = t2i_model.pipeline.tokenizer
    for text in [
        "Seven green circular farmlands are neatly arranged on the ground",
        # (no '!': SD2's tokenizer pads with '!', so a literal '!' becomes the pad token there)
        "a harbour with 12 ships, docks & cranes.",
        "dense residential area; tree-lined streets",
    ]:
        expected = reference(text)[0].tolist()
        got = ours(text, padding="max_length", max_length=77).input_ids
        assert got == expected


def test_loads_real_architecture_from_local_folder(tiny_t2i, t2i_model):
    pipe = t2i_model.pipeline
    assert t2i_model.checkpoint.source == "local folder"
    assert pipe.unet.config.class_embed_type == "timestep"
    assert pipe.unet.config.in_channels == 4
    assert pipe.vae.config.scaling_factor == pytest.approx(0.18215)
    assert pipe.vae_scale_factor == 8
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"  # the default
    assert t2i_model.device.type == "cpu" and t2i_model.dtype == torch.float32
    assert not t2i_model.inpainting


def test_inpainting_checkpoint_loads_with_nine_channels(tiny_inpaint):
    model = load_model(str(tiny_inpaint), "cpu", precision="fp32")
    assert model.inpainting
    assert model.pipeline.unet.config.in_channels == 9
    assert model.pipeline.unet.config.class_embed_type == "timestep"
    # The class embedding is the SD2 "timestep" MLP fed by the level's sinusoidal projection.
    emb = model.pipeline.unet.class_embedding
    assert emb.linear_1.in_features == model.pipeline.unet.config.block_out_channels[0]


def test_env_variable_selects_the_model(tiny_t2i, monkeypatch):
    monkeypatch.setenv(MODEL_ENV, str(tiny_t2i))
    assert resolve_checkpoint().path == tiny_t2i.resolve()


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nowhere"))


def test_uncached_hub_model_offline_gives_advice(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_checkpoint("lcybuaa/Text2Earth", offline=True, cache_dir=tmp_path / "empty")
    message = str(info.value)
    assert "--model" in message and MODEL_ENV in message and "lcybuaa/Text2Earth" in message


def test_hub_id_is_found_in_the_local_hub_cache(tiny_t2i, tmp_path):
    """The Hugging Face cache layout (blobs named by sha256, snapshots of symlinks)."""
    cache = tmp_path / "hub"
    repo = cache / "models--someone--text2earth-tiny"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / revision
    for file in tiny_t2i.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = snapshot / file.relative_to(tiny_t2i)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    checkpoint = resolve_checkpoint("someone/text2earth-tiny", offline=True, cache_dir=cache)
    assert checkpoint.source == "hub cache"
    assert checkpoint.path == snapshot
    # Hashing reads the blob names instead of 3 GB of data, and agrees with reading them.
    assert weights_sha256(snapshot) == weights_sha256(tiny_t2i)


def test_corrupt_weights_name_the_broken_part(tiny_t2i, tmp_path):
    broken = copy_checkpoint(tiny_t2i, tmp_path / "broken")
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="unet"):
        load_model(str(broken), "cpu")


def test_pickle_weights_are_refused(tiny_t2i, tmp_path):
    ckpt = copy_checkpoint(tiny_t2i, tmp_path / "pickled")
    (ckpt / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({}, ckpt / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors only"):
        load_model(str(ckpt), "cpu")


@pytest.mark.parametrize("remove", ["model_index.json", "tokenizer", "text_encoder"])
def test_incomplete_folder_is_a_clear_error(tiny_t2i, tmp_path, remove):
    ckpt = copy_checkpoint(tiny_t2i, tmp_path / "incomplete")
    target = ckpt / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(CheckpointError, match=remove.split(".")[0]):
        resolve_checkpoint(str(ckpt))


def test_code_shipped_with_a_checkpoint_is_never_run(tiny_t2i, tmp_path):
    ckpt = copy_checkpoint(tiny_t2i, tmp_path / "with-code")
    marker = tmp_path / "code-ran"
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    for name in ("pipeline_text2earth_diffusion.py", "unet/modeling_custom.py", "__init__.py"):
        (ckpt / name).write_text(payload)
    index = json.loads((ckpt / "model_index.json").read_text())
    index["_class_name"] = ["pipeline_text2earth_diffusion", "Text2EarthDiffusionPipeline"]
    (ckpt / "model_index.json").write_text(json.dumps(index))
    model = load_model(str(ckpt), "cpu", precision="fp32")
    model.pipeline("x", level=17, num_inference_steps=1)
    assert not marker.exists()


def test_weights_hash_follows_content(tiny_t2i, tiny_inpaint, tmp_path):
    copy = copy_checkpoint(tiny_t2i, tmp_path / "copy")
    assert weights_sha256(copy) == weights_sha256(tiny_t2i)
    assert weights_sha256(tiny_inpaint) != weights_sha256(tiny_t2i)
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert weights_sha256(copy) != weights_sha256(tiny_t2i)
    assert len(weights_sha256(copy)) == 64


def test_device_choice():
    assert select_device("cpu") == (torch.device("cpu"), torch.float32)
    auto_device, _ = select_device("auto")
    assert auto_device.type == ("cuda" if torch.cuda.is_available() else auto_device.type)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            select_device("cuda")
    with pytest.raises(InputError, match="device"):
        select_device("tpu9")


def test_bad_model_spec_is_refused():
    with pytest.raises(InputError, match="hub id"):
        resolve_checkpoint("not a model id")


def test_same_checkpoint_same_pixels_across_loads(tiny_t2i, t2i_model):
    again = load_model(str(tiny_t2i), "cpu", precision="fp32")
    again.pipeline.use_scheduler("euler")
    t2i_model.pipeline.use_scheduler("euler")
    kw = dict(level=16, num_inference_steps=2)
    a = again.pipeline("x", generator=torch.Generator().manual_seed(0), **kw).images
    b = t2i_model.pipeline("x", generator=torch.Generator().manual_seed(0), **kw).images
    np.testing.assert_array_equal(a, b)
