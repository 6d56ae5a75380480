"""A cheap picture of the current latents: a linear map from the 4 SD latent channels to RGB.

No VAE decode (that costs more than a UNet step): the approximation is the one popular
diffusion UIs use for live previews of SD 1/2 latents; good enough to see the image form.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Least-squares fit of SD 1.x/2.x latent channels to RGB in [-1, 1], as widely published.
LATENT_RGB = np.array(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ],
    dtype=np.float32,
)
PREVIEW_SIDE = 256


def latents_to_png(latents: np.ndarray, side: int = PREVIEW_SIDE) -> bytes:
    """(4, h, w) latents -> PNG bytes, the long side scaled to ``side`` pixels."""
    rgb = np.einsum("chw,cr->hwr", latents.astype(np.float32), LATENT_RGB)
    rgb = ((rgb + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                         Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
