"""CLIP score: 100 * max(cos(image embedding, text embedding), 0) per image (Hessel et al.'s
CLIPScore without its 2.5 weight; the form torchmetrics and text-to-image papers report).

Two scorers share it: Git-RSCLIP (engine.quality.rank_model's embed_images / embed_texts) and a
general CLIP (transformers' CLIPModel; default openai/clip-vit-large-patch14, torchmetrics'
default for CLIP score), used only when its weights are on this machine. torchmetrics' own
CLIPScore is not used: with transformers 5 its get_*_features return model outputs, not
tensors, and it fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import ModelNotFoundError

GENERAL_CLIP = "openai/clip-vit-large-patch14"


def clip_scores(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> np.ndarray:
    """Per pair i: 100 * max(cos(image_i, text_i), 0), in float64."""
    image = torch.nn.functional.normalize(image_embeds.double(), dim=-1)
    text = torch.nn.functional.normalize(text_embeds.double(), dim=-1)
    return (100.0 * (image * text).sum(-1).clamp(min=0)).cpu().numpy()


def _embedding(output) -> torch.Tensor:
    # transformers 5 returns the projected embedding as the output's pooler_output
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@dataclass
class GeneralClip:
    """A transformers CLIP model with RankModel's embedding interface."""

    model: object
    processor: object
    name: str
    device: str = "cpu"

    @torch.no_grad()
    def embed_images(self, images: list[np.ndarray]) -> torch.Tensor:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, self.model.dtype)
        return _embedding(self.model.get_image_features(pixel_values=pixels)).float().cpu()

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True,
                                truncation=True)
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        return _embedding(self.model.get_text_features(**tokens)).float().cpu()


def load_general_clip(name_or_path: str | None = None, device: str = "cpu",
                      offline: bool | None = None) -> GeneralClip:
    """A local folder or a hub id (the hub cache only when offline); safetensors only."""
    from transformers import CLIPModel, CLIPProcessor

    spec = name_or_path or GENERAL_CLIP
    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    local = Path(spec).expanduser()
    if local.exists() and not local.is_dir():
        raise ModelNotFoundError(f"general CLIP {spec}: not a model folder")
    try:
        source = str(local) if local.is_dir() else spec
        local_only = offline or local.is_dir()
        model = CLIPModel.from_pretrained(  # nosec B615 - safetensors only, no hub code run
            source, use_safetensors=True, local_files_only=local_only, trust_remote_code=False)
        processor = CLIPProcessor.from_pretrained(  # nosec B615 - configs and vocabulary
            source, local_files_only=local_only, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - missing, offline, pickle-only: one message
        raise ModelNotFoundError(
            f"the general CLIP {spec} is not on this machine ({type(exc).__name__}); download it "
            f"once where there is internet (`hf download {GENERAL_CLIP} --include '*.json' "
            "'*.txt' '*.safetensors'`) or pass a local folder with --clip-model"
        ) from None
    return GeneralClip(model.eval().to(device), processor, spec, device)
