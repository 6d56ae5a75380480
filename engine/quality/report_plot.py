"""The evaluation's two pictures, drawn with pillow (a kept dependency): score distributions
(one histogram panel per scorer) and a grid of sample images with their captions' ids and
scores. matplotlib would draw nicer axes but is not in the engine's pins; two histograms and a
grid do not earn a 30 MB dependency."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, PANEL_HEIGHT, MARGIN = 720, 200, 48
BINS = 20
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def score_histograms(series: dict[str, np.ndarray]) -> Image.Image:
    """One panel per named series of scores, on a shared x axis from 0 to the largest score."""
    named = {k: np.asarray(v, dtype=float) for k, v in series.items() if len(v)}
    height = PANEL_HEIGHT * max(1, len(named))
    canvas = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font()
    if not named:
        draw.text((MARGIN, MARGIN), "no scores (no scorer was available)", fill="black", font=font)
        return canvas
    top = max(float(v.max()) for v in named.values())
    x_max = max(10.0, math.ceil(top / 10) * 10)
    edges = np.linspace(0, x_max, BINS + 1)
    plot_w = WIDTH - 2 * MARGIN
    for panel, (name, values) in enumerate(named.items()):
        y0 = panel * PANEL_HEIGHT
        base = y0 + PANEL_HEIGHT - MARGIN
        plot_h = PANEL_HEIGHT - MARGIN - 28
        counts, _ = np.histogram(values, bins=edges)
        peak = max(1, int(counts.max()))
        colour = COLOURS[panel % len(COLOURS)]
        for i, count in enumerate(counts):
            if count:
                x0 = MARGIN + plot_w * i / BINS
                x1 = MARGIN + plot_w * (i + 1) / BINS - 1
                draw.rectangle([x0, base - plot_h * count / peak, x1, base], fill=colour)
        mean = float(values.mean())
        xm = MARGIN + plot_w * mean / x_max
        draw.line([xm, base - plot_h, xm, base], fill="black", width=1)
        draw.line([MARGIN, base, WIDTH - MARGIN, base], fill="black")
        draw.line([MARGIN, base, MARGIN, base - plot_h], fill="black")
        for tick in np.linspace(0, x_max, 6):
            xt = MARGIN + plot_w * tick / x_max
            draw.line([xt, base, xt, base + 4], fill="black")
            draw.text((xt - 8, base + 6), f"{tick:g}", fill="black", font=font)
        draw.text((MARGIN, y0 + 8), f"{name}: mean {mean:.2f}, n = {len(values)} "
                  f"(max count {peak})", fill="black", font=font)
    return canvas


def sample_grid(samples: list[tuple[np.ndarray, str]], columns: int = 4,
                thumb: int = 160) -> Image.Image:
    """Images (uint8 H, W, 3) with a one-line label under each."""
    label_h = 16
    rows = max(1, math.ceil(len(samples) / columns))
    cols = max(1, min(columns, len(samples)))
    canvas = Image.new("RGB", (cols * (thumb + 4) + 4, rows * (thumb + label_h + 4) + 4), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for i, (image, label) in enumerate(samples):
        x = 4 + (i % cols) * (thumb + 4)
        y = 4 + (i // cols) * (thumb + label_h + 4)
        tile = Image.fromarray(image).resize((thumb, thumb), Image.Resampling.BICUBIC)
        canvas.paste(tile, (x, y))
        draw.text((x, y + thumb + 2), label[: thumb // 6], fill="black", font=font)
    return canvas
