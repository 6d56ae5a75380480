"""Write randomly initialised checkpoints of the real Text2Earth architecture.

Same classes, config keys and folder layout as ``lcybuaa/Text2Earth`` (a level-conditioned
SD2 UNet with ``class_embed_type="timestep"``, the SD2 VAE, a CLIP text tower, the real CLIP
BPE tokenizer), only tiny. Tests load them through the very same code as real weights, and
``make run`` falls back to one when the real weights cannot be had, so a new user still sees
the whole path work. The images they make are noise-like: a pipeline check, not imagery.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from open_clip.tokenizer import bytes_to_unicode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from engine.model.construction_lock import building_one_at_a_time

CLIP_VOCAB_SIZE = 49408
CLIP_MERGES = CLIP_VOCAB_SIZE - 256 * 2 - 2  # byte tokens, their </w> forms, start/end

# The SD2-base scheduler configuration (what the authors' checkpoint folder carries).
SCHEDULER_CONFIG = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def unet_config(in_channels: int = 4, full_size: bool = False, level_embedding: bool = True):
    """SD2-base UNet config plus the level's class embedding; tiny unless ``full_size``."""
    if full_size:
        config = dict(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            layers_per_block=2,
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
        )
    else:
        config = dict(
            sample_size=32,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=1,
            cross_attention_dim=32,
            attention_head_dim=(2, 4),
        )
    config.update(in_channels=in_channels, out_channels=4, use_linear_projection=True)
    if level_embedding:
        # The level's MLP (320 -> 1280 -> 1280 at full size), added to the time embedding.
        config["class_embed_type"] = "timestep"
    return config


def vae_config(full_size: bool = False) -> dict:
    channels = (128, 256, 512, 512) if full_size else (8, 16, 16, 16)
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=channels,
        layers_per_block=2 if full_size else 1,
        latent_channels=4,
        norm_num_groups=32 if full_size else 8,
        sample_size=256,
        scaling_factor=0.18215,
    )


def text_encoder_config(full_size: bool = False) -> CLIPTextConfig:
    size = (
        dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
             num_attention_heads=16, projection_dim=512)
        if full_size
        else dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4, projection_dim=32)
    )
    # The OpenCLIP ViT-H/14 text tower as SD2 stores it.
    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=77,
        hidden_act="gelu",
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        **size,
    )


def open_clip_bpe_path() -> Path:
    """The CLIP BPE merges that ship inside the open_clip_torch wheel (no download needed)."""
    return Path(str(resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"))


def write_clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """A real CLIPTokenizer (SD2's settings) built offline from open_clip's BPE file."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : CLIP_MERGES + 1]]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != CLIP_VOCAB_SIZE:  # the wheel's BPE vocabulary is not the one we know
        raise ValueError(f"CLIP vocabulary of {len(tokens)} tokens, expected {CLIP_VOCAB_SIZE}")
    tokenizer = CLIPTokenizer(
        vocab={t: i for i, t in enumerate(tokens)},
        merges=merges,
        pad_token="!",  # nosec B106 - SD2 pads with id 0 ("!"), as OpenCLIP does
        model_max_length=77,
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


@building_one_at_a_time
def write_checkpoint(
    folder: str | Path,
    inpainting: bool = False,
    level_embedding: bool = True,
    seed: int = 0,
    full_size: bool = False,
    unet_dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a random-weight checkpoint in the diffusers folder layout, safetensors only
    (``unet_dtype`` float16: the UNet stored as the Text2Earth hub stores it)."""
    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **unet_config(9 if inpainting else 4, full_size=full_size, level_embedding=level_embedding)
    )
    vae = AutoencoderKL(**vae_config(full_size))
    text_encoder = CLIPTextModel(text_encoder_config(full_size))
    unet.to(unet_dtype).save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    write_clip_tokenizer(folder / "tokenizer")
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    pipeline_class = "StableDiffusionInpaintPipeline" if inpainting else "StableDiffusionPipeline"
    index = {
        "_class_name": pipeline_class,
        "_diffusers_version": "0.29.0",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
