"""Git-RSCLIP, the Text2Earth authors' SigLIP image-text model: find it, load it, score with it.

A transformers SigLIP checkpoint (``config.json`` with ``model_type: siglip``, safetensors
weights, a SentencePiece ``spiece.model``, an image processor), run as transformers' own
``AutoModel`` / ``AutoProcessor`` the way the model card does: text padded to 64 tokens with
``padding="max_length"`` (what SigLIP was trained on), probability ``sigmoid(logits_per_image)``.
Found like the Text2Earth weights (engine.model.checkpoint: a folder, the hub cache, the hub),
safetensors only, and no code from a checkpoint is ever run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import CheckpointError, InputError, ModelNotFoundError
from engine.model.checkpoint import (
    HUB_ID,
    MODEL_ENV,
    Checkpoint,
    hub_snapshot,
    is_local_path,
    missing_model_advice,
)
from engine.model.construction_lock import building_one_at_a_time

RANK_MODEL = "lcybuaa/Git-RSCLIP"
RANK_MODEL_ENV = "TEXT2EARTH_RANK_MODEL"
RANK_HUB_PATTERNS = ["*.json", "*.model", "*.safetensors"]
TEXT_LENGTH = 64  # SigLIP's text length: padded to it ("max_length"), as in training
BATCH = 16  # images per forward pass: bounds activation memory on large rasters


def rank_model_spec(name_or_path: str | None = None) -> str:
    """--rank-model, else $TEXT2EARTH_RANK_MODEL, else lcybuaa/Git-RSCLIP."""
    return (name_or_path or os.environ.get(RANK_MODEL_ENV) or RANK_MODEL).strip()


def missing_rank_model_advice(model_id: str) -> str:
    """The Text2Earth weights' advice, worded for Git-RSCLIP (its tokenizer is a .model)."""
    return (
        missing_model_advice(model_id)
        .replace("The Text2Earth weights", "The Git-RSCLIP rank model")
        .replace("'*.safetensors'", "'*.safetensors' '*.model'")
        .replace(f"`--model /path/to/Text2Earth` or the environment variable {MODEL_ENV}",
                 f"`--rank-model /path/to/Git-RSCLIP` or the environment variable "
                 f"{RANK_MODEL_ENV}")
    )


def check_rank_folder(path: Path) -> None:
    """A clear error for a folder that is not a safetensors SigLIP checkpoint."""
    if not path.is_dir():
        raise ModelNotFoundError(f"rank model folder {path} does not exist")
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is not a Git-RSCLIP (SigLIP) folder: config.json is missing") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}/config.json is unreadable: {exc}") from None
    if config.get("model_type") != "siglip":
        raise CheckpointError(
            f"{path} holds a {config.get('model_type')!r} model; the rank model must be a "
            "SigLIP image-text model such as lcybuaa/Git-RSCLIP"
        )
    if not any(path.glob("*.safetensors")):
        pickles = [p.name for p in path.glob("*") if p.suffix in (".bin", ".ckpt", ".pt")]
        if pickles:
            raise CheckpointError(
                f"{path} has only pickle weights ({', '.join(pickles)}); the engine loads "
                "safetensors only, since pickle files can run code"
            )
        raise CheckpointError(f"{path} has no .safetensors weights")
    if not (path / "spiece.model").is_file():
        raise CheckpointError(f"{path} has no spiece.model (the SigLIP tokenizer)")


def resolve_rank_model(
    name_or_path: str | None = None, offline: bool | None = None,
    cache_dir: str | Path | None = None,
) -> Checkpoint:
    """A folder, else the hub cache, else (unless offline) a download of configs, tokenizer
    and safetensors only; ModelNotFoundError with the advice when none of them has it."""
    spec = rank_model_spec(name_or_path)
    if is_local_path(spec):
        path = Path(spec).expanduser().resolve()
        check_rank_folder(path)
        return Checkpoint(path, str(path), "local folder")
    if not HUB_ID.match(spec):
        raise InputError(
            f"--rank-model {spec!r} is neither an existing folder nor a hub id (owner/name)")

    path, source = hub_snapshot(spec, RANK_HUB_PATTERNS, missing_rank_model_advice(spec),
                                offline, cache_dir)
    check_rank_folder(path)
    return Checkpoint(path, spec, source)


def local_rank_model(name_or_path: str | None = None) -> Checkpoint | None:
    """The rank model if it is on this machine (never downloads), else None: outputs get
    a score when one is at hand, and nobody waits for a download they did not ask for."""
    try:
        return resolve_rank_model(name_or_path, offline=True)
    except ModelNotFoundError:
        return None


@dataclass
class RankModel:
    model: object  # transformers' SiglipModel (typed loosely: importing it is slow)
    processor: object  # transformers' SiglipProcessor
    checkpoint: Checkpoint
    device: object  # torch.device

    @property
    def image_size(self) -> int:
        """The side of the square the model sees (the processor resizes every image to it)."""
        return int(self.model.config.vision_config.image_size)

    def _pixels(self, images: list[np.ndarray]):
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise InputError(
                    f"an image to score must be (height, width, 3) uint8 RGB, got "
                    f"{image.shape} {image.dtype}")
        pixels = self.processor.image_processor(
            images=list(images), input_data_format="channels_last", return_tensors="pt")
        return pixels["pixel_values"].to(self.device, self.model.dtype)

    def _text(self, texts: list[str]):
        tokens = self.processor.tokenizer(
            list(texts), padding="max_length", max_length=TEXT_LENGTH, truncation=True,
            return_tensors="pt")
        return {k: v.to(self.device) for k, v in tokens.items()}

    def probabilities(self, images: list[np.ndarray], texts: list[str]) -> np.ndarray:
        """(len(images), len(texts)): sigmoid(logits_per_image) of every image-text pair."""
        import torch

        if not images or not texts:
            return np.zeros((len(images), len(texts)), np.float64)
        tokens = self._text(texts)
        rows = []
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                pixels = self._pixels(images[start : start + BATCH])
                logits = self.model(pixel_values=pixels, **tokens).logits_per_image
                rows.append(torch.sigmoid(logits.float()).cpu().numpy())
        return np.concatenate(rows).astype(np.float64)

    def score(self, images: list[np.ndarray], prompts: list[str]) -> np.ndarray:
        """sigmoid(logits_per_image) of each (images[i], prompts[i]) pair."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        unique = list(dict.fromkeys(prompts))
        table = self.probabilities(images, unique)
        column = {text: j for j, text in enumerate(unique)}
        return np.array([table[i, column[p]] for i, p in enumerate(prompts)], np.float64)

    def embed_images(self, images: list[np.ndarray]):
        """The model's get_image_features (pooled, not normalised), (N, D)."""
        import torch

        with torch.inference_mode():
            return torch.cat([
                self.model.get_image_features(pixel_values=self._pixels(images[s : s + BATCH]))
                .pooler_output for s in range(0, len(images), BATCH)])

    def embed_texts(self, texts: list[str]):
        """The model's get_text_features (pooled, not normalised), (N, D)."""
        import torch

        with torch.inference_mode():
            return self.model.get_text_features(**self._text(texts)).pooler_output


@building_one_at_a_time
def load_rank_model(
    name_or_path: str | None = None, device: str = "cpu", offline: bool | None = None,
    checkpoint: Checkpoint | None = None,
) -> RankModel:
    """Resolve (unless ``checkpoint`` is given) and load Git-RSCLIP in fp32 (fp16 on a GPU)."""
    import torch
    from transformers import AutoModel, AutoProcessor
    from transformers.utils import logging as tlog

    from engine.model.device import select_device

    torch_device, half = select_device(device)
    checkpoint = checkpoint or resolve_rank_model(name_or_path, offline)
    dtype = torch.float32 if torch_device.type == "cpu" else half
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()  # one line per error, no bars: the CLI's own output only
    try:
        # A resolved local folder (never a hub id here): nothing is downloaded, no code run.
        model = AutoModel.from_pretrained(  # nosec B615 - a local folder, safetensors only
            checkpoint.path, use_safetensors=True, trust_remote_code=False, dtype=dtype)
        processor = AutoProcessor.from_pretrained(  # nosec B615 - a local folder
            checkpoint.path, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - corrupt or mismatched files: one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"could not load the rank model from {checkpoint.path}: "
                              f"{type(exc).__name__}: {first[:300]}") from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise CheckpointError(f"{checkpoint.path} has no SigLIP processor (image + tokenizer)")
    model.eval().to(torch_device)
    return RankModel(model, processor, checkpoint, torch_device)


OFF = ("none", "off")  # --rank-model none: no scores, no ranking


def job_rank_model(name_or_path: str | None = None, device: str = "cpu",
                   offline: bool | None = None) -> RankModel | None:
    """The rank model a generation job scores its outputs with, or None.

    Asked for by name (``--rank-model``): it must be found (downloaded unless offline), else
    the missing-model advice. Not asked for: $TEXT2EARTH_RANK_MODEL or Git-RSCLIP when it is
    already on this machine (never a download nobody asked for), else None: no score.
    ``none`` / ``off``: None.
    """
    if name_or_path is not None and name_or_path.strip().lower() in OFF:
        return None
    if name_or_path:
        return load_rank_model(name_or_path, device, offline)
    checkpoint = local_rank_model()
    return None if checkpoint is None else load_rank_model(device=device,
                                                           checkpoint=checkpoint)
