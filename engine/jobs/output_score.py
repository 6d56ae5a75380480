"""The prompt-fidelity score of an edit's or extension's regenerated areas, for its tags.

Scored on the scratch stores before the output is written (tags cannot be added to a COG
afterwards without rewriting it): every model-sized window of every regenerated area, in the
model's 8-bit colours (the plan's band mapping), the mean of their probabilities.
"""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from engine.geo.geotiff import TAG_PREFIX
from engine.model.pipeline import split_level_prefix
from engine.model.provenance import public_model_id
from engine.quality.raster_rgb import GROUP
from engine.quality.scoring import summarise, window_boxes


def score_tags(score: float, rank_model_id: str) -> dict[str, str]:
    return {f"{TAG_PREFIX}RSCLIP_SCORE": f"{score:.6f}",
            f"{TAG_PREFIX}RSCLIP_MODEL": public_model_id(rank_model_id)}


def areas_score_tags(ranker, plan, areas: list, prompt: str) -> dict[str, str]:
    """``areas``: (window, store, written) of jobs.edit.run; {} for a gray raster."""
    if len(plan.info.rgb_bands) != 3:
        return {}  # Git-RSCLIP scores colour images
    size = ranker.image_size
    boxes = [(store, Window(c, r, w, h)) for area, store, _ in areas
             for r, c, h, w in window_boxes(area.height, area.width, size)]
    if not boxes:
        return {}
    text = split_level_prefix(prompt)[1].strip()

    def crop(store, window: Window) -> np.ndarray:
        return np.dstack([plan.mapping.to_bytes(store.read(b, window=window), k)
                          for k, b in enumerate(plan.info.rgb_bands)])

    # Read GROUP windows at a time: a whole restyled 20000 px raster is 6000 windows, 1.2 GB.
    values = np.concatenate([
        ranker.probabilities([crop(*box) for box in boxes[s : s + GROUP]], [text])[:, 0]
        for s in range(0, len(boxes), GROUP)])
    return score_tags(summarise(values, size).score, ranker.checkpoint.model_id)
