"""A raster's colours as Git-RSCLIP sees them, window by window, through engine.geo.raster_source
(R, G, B by colour interpretation, the same 8-bit mapping edits use), and its score."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from engine.errors import InputError
from engine.geo.raster_source import (
    BandMapping,
    SourceInfo,
    band_mapping,
    describe_source,
    open_source,
    valid_pixels,
)
from engine.quality.scoring import ImageScore, summarise, window_boxes

GROUP = 16  # windows read and scored together: bounds memory on huge rasters


@dataclass
class RgbRaster:
    src: object  # an open rasterio dataset (read-only)
    info: SourceInfo
    mapping: BandMapping

    def read(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """(h, w, 3) uint8 of the window (row, col, h, w)."""
        r, c, h, w = box
        window = Window(c, r, w, h)
        bands = [self.mapping.to_bytes(self.src.read(b, window=window), k)
                 for k, b in enumerate(self.info.rgb_bands)]
        return np.dstack(bands)

    def valid(self, box: tuple[int, int, int, int]) -> float:
        """The share of the window's pixels that hold data in every colour band."""
        r, c, h, w = box
        return float(valid_pixels(self.src, Window(c, r, w, h), self.info.rgb_bands,
                                  boundless=False).mean())


@contextmanager
def open_rgb(path: str | Path, bands: list[int] | None = None) -> Iterator[RgbRaster]:
    """The raster opened read-only with its R, G, B bands; one line if it has no colours."""
    with open_source(path) as src:
        info = describe_source(src, bands)
        if len(info.rgb_bands) != 3:
            raise InputError(
                f"{Path(path).name} has no R, G, B bands (one gray band is used, "
                f"{src.count} band(s) in all): Git-RSCLIP scores colour images; give three "
                "bands with --bands R,G,B")
        yield RgbRaster(src, info, band_mapping(src, info))


def raster_windows(raster: RgbRaster, size: int,
                   min_valid: float = 0.5) -> list[tuple[int, int, int, int]]:
    """The windows worth scoring: those with at least ``min_valid`` of their pixels valid."""
    boxes = window_boxes(raster.info.height, raster.info.width, size)
    return [box for box in boxes if raster.valid(box) >= min_valid]


def score_raster(rank, path: str | Path, prompt: str,
                 bands: list[int] | None = None) -> ImageScore:
    """A raster's score for ``prompt`` (engine.quality.scoring's rule), windows that are
    mostly nodata left out."""
    with open_rgb(path, bands) as raster:
        boxes = raster_windows(raster, rank.image_size)
        if not boxes:
            raise InputError(f"{Path(path).name} holds no valid pixels to score")
        values = []
        for start in range(0, len(boxes), GROUP):
            images = [raster.read(box) for box in boxes[start : start + GROUP]]
            values.append(rank.probabilities(images, [prompt])[:, 0])
    return summarise(np.concatenate(values), rank.image_size)
