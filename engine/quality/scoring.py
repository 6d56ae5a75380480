"""A prompt-fidelity score for an image of any size: one model input, or a mean over windows.

An image that fits one model input (both sides at most the model's input size, 256 px for
Git-RSCLIP) is scored as it is: exactly transformers' SigLIP probability, the processor
resizing it. A larger one would be shrunk past recognition by that resize, so it is cut into
windows of the model's input size at the image's own pixel size (the last row and column of
windows are shifted back inside the image, overlapping their neighbours a little) and the
score is the mean of the windows' probabilities. Every window of every image goes through the
model in the same batches, so ranking N candidates costs one batched pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SINGLE = "single"  # the whole image is one model input
WINDOW_MEAN = "window_mean"  # mean over windows of the model's input size


@dataclass(frozen=True)
class ImageScore:
    score: float
    method: str  # SINGLE | WINDOW_MEAN
    windows: int
    window_size: int  # px: the model's input size
    window_scores: tuple[float, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict:
        return {"score": self.score, "method": self.method, "windows": self.windows,
                "window_size": self.window_size}


def axis_starts(length: int, size: int) -> list[int]:
    """Window starts covering ``length`` with windows of ``size`` (one if it fits)."""
    if length <= size:
        return [0]
    n = math.ceil(length / size)
    # Evenly spread, the last one ending at the edge: overlaps are small and symmetric.
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


def window_boxes(height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """(row, col, height, width) of the windows an image of this size is scored on."""
    return [(r, c, min(size, height), min(size, width))
            for r in axis_starts(height, size) for c in axis_starts(width, size)]


def crops(image: np.ndarray, size: int) -> list[np.ndarray]:
    return [image[r : r + h, c : c + w] for r, c, h, w in window_boxes(*image.shape[:2], size)]


def summarise(values: np.ndarray, size: int) -> ImageScore:
    method = SINGLE if len(values) == 1 else WINDOW_MEAN
    return ImageScore(float(np.mean(values)), method, len(values), size,
                      tuple(float(v) for v in values))


def score_images(rank, images: list[np.ndarray], prompt: str) -> list[ImageScore]:
    """The score of each image against one prompt (all windows in shared batches)."""
    size = rank.image_size
    pieces = [crops(image, size) for image in images]
    flat = [crop for piece in pieces for crop in piece]
    values = rank.probabilities(flat, [prompt])[:, 0]
    scores, at = [], 0
    for piece in pieces:
        scores.append(summarise(values[at : at + len(piece)], size))
        at += len(piece)
    return scores


def score_image(rank, image: np.ndarray, prompt: str) -> ImageScore:
    return score_images(rank, [image], prompt)[0]
