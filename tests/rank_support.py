"""Shared by the Git-RSCLIP tests: the tiny rank model and transformers' own computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_rank(tmp_path_factory) -> Path:
    from engine.quality.tiny_rank_model import write_tiny_rank_model

    return write_tiny_rank_model(tmp_path_factory.mktemp("rank") / "git-rsclip-tiny", seed=0)


def reference_probabilities(folder: Path, images, texts) -> np.ndarray:
    """transformers' own SiglipModel + AutoProcessor, as the model card runs them:
    (len(images), len(texts)) of sigmoid(logits_per_image)."""
    from transformers import AutoProcessor, SiglipModel

    model = SiglipModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(text=texts, images=list(images), padding="max_length", max_length=64,
                       return_tensors="pt")
    with torch.no_grad():
        return torch.sigmoid(model(**inputs).logits_per_image).numpy()


def read_rgb(path) -> np.ndarray:
    """Bands 1-3 of a raster as (h, w, 3), read with rasterio directly."""
    import rasterio

    with rasterio.open(path) as src:
        return np.moveaxis(src.read([1, 2, 3]), 0, 2)
