"""Weights streamed tensor by tensor (engine.model.streamed_weights) against the libraries' own
loaders: the same tensors, bit for bit, in every precision; the library used where the files
do not match; and the peak memory that is the reason for streaming."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel

from engine.model.checkpoint import load_model
from engine.model.streamed_weights import REMAP_BYTES, load_streamed

PARTS = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel}


def library_load(model_class, folder, dtype):
    return model_class.from_pretrained(folder, use_safetensors=True, torch_dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("part", sorted(PARTS))
def test_streamed_part_equals_the_library_load(tiny_inpaint, part, dtype):
    folder = tiny_inpaint / part
    streamed = load_streamed(PARTS[part], folder, dtype)
    reference = library_load(PARTS[part], folder, dtype)
    assert streamed is not None and not streamed.training
    ours = dict(streamed.state_dict(keep_vars=True))
    theirs = dict(reference.state_dict(keep_vars=True))
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype, name
        assert ours[name].device.type == "cpu", name
        assert torch.equal(ours[name], tensor), name
    # Buffers never stored (CLIP's position ids) are built, not left empty on the meta device.
    assert all(b.device.type == "cpu" for b in streamed.buffers())
    assert all(torch.equal(a, b) for a, b in zip(streamed.buffers(), reference.buffers(),
                                                 strict=True))


def test_fp16_stored_unet_and_legacy_position_ids_are_streamed(tiny_t2i, tmp_path):
    """The hub's layout: the UNet stored in fp16, the text encoder saved by transformers 4.x
    (names under ``text_model.``, which transformers 5 drops, and CLIP's position ids, a
    buffer the model builds)."""
    folder = tmp_path / "hub"
    shutil.copytree(tiny_t2i, folder)
    unet = library_load(UNet2DConditionModel, folder / "unet", torch.float16)
    unet.save_pretrained(folder / "unet")
    weights = folder / "text_encoder" / "model.safetensors"
    # As transformers 4 saved CLIPTextModel: every name under text_model., the ids stored.
    tensors = {f"text_model.{name}": tensor for name, tensor in load_file(weights).items()}
    tensors["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    save_file(tensors, weights, metadata={"format": "pt"})
    for part, dtype in (("unet", torch.bfloat16), ("unet", torch.float32),
                        ("text_encoder", torch.bfloat16)):
        streamed = load_streamed(PARTS[part], folder / part, dtype)
        reference = library_load(PARTS[part], folder / part, dtype)
        assert streamed is not None, part
        theirs = reference.state_dict()
        assert streamed.state_dict().keys() == theirs.keys()
        for name, tensor in streamed.state_dict().items():
            assert tensor.dtype == theirs[name].dtype and torch.equal(tensor, theirs[name]), name


def test_a_part_whose_files_do_not_match_goes_to_the_library(tiny_t2i, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_t2i, folder)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    tensors["encoder.extra_weight"] = torch.zeros(3)  # a name the model does not have
    save_file(tensors, weights)
    assert load_streamed(AutoencoderKL, folder / "vae", torch.float32) is None
    variant = folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    (folder / "unet" / "diffusion_pytorch_model.safetensors").rename(variant)
    assert load_streamed(UNet2DConditionModel, folder / "unet", torch.float32) is None
    variant.rename(folder / "unet" / "diffusion_pytorch_model.safetensors")
    # The whole load still works: the library's loader takes the part it ignores keys for.
    model = load_model(str(folder), "cpu", precision="fp32")
    reference = library_load(AutoencoderKL, folder / "vae", torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(model.pipeline.vae.state_dict().values(),
                                                 reference.state_dict().values(), strict=True))


def test_sharded_parts_are_streamed_from_their_index(tiny_t2i, tmp_path):
    folder = tmp_path / "sharded"
    reference = library_load(CLIPTextModel, tiny_t2i / "text_encoder", torch.float32)
    reference.save_pretrained(folder, max_shard_size="100KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    streamed = load_streamed(CLIPTextModel, folder, torch.bfloat16)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(streamed.state_dict()[name], tensor.to(torch.bfloat16)), name


PEAK_PROBE = """
import sys, threading, torch
from engine.bench.memory import peak_growth
from diffusers import AutoencoderKL
from engine.model.streamed_weights import load_streamed
folder, how = sys.argv[1], sys.argv[2]
if how == "streamed":
    work = lambda: load_streamed(AutoencoderKL, __import__("pathlib").Path(folder), torch.bfloat16)
else:
    work = lambda: AutoencoderKL.from_pretrained(folder, use_safetensors=True,
                                                 torch_dtype=torch.bfloat16)
kept = []
print(peak_growth(lambda: kept.append(work()), every_s=0.002)[1])
"""


def test_streaming_keeps_the_file_out_of_the_peak(tmp_path):
    """The full-size VAE (84 M parameters, 335 MB in fp32) loaded as bf16 (167 MB): the
    library's loader holds the file beside the model, streaming at most a window of it."""
    from engine.model.tiny_checkpoint import vae_config

    torch.manual_seed(0)
    AutoencoderKL(**vae_config(full_size=True)).save_pretrained(tmp_path / "vae")
    file_bytes = (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").stat().st_size
    model_bytes = file_bytes // 2
    growth = {}
    for how in ("streamed", "library"):
        out = subprocess.run([sys.executable, "-c", PEAK_PROBE, str(tmp_path / "vae"), how],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        growth[how] = int(out.stdout.split()[-1])
    # The library's peak carries the whole file (what this test must be able to see) ...
    assert growth["library"] > model_bytes + 0.8 * file_bytes, growth
    # ... streaming only the model and one window of the file (and the allocator's slack).
    assert growth["streamed"] < model_bytes + REMAP_BYTES + (48 << 20), growth
