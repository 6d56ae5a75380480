"""Image folders of an evaluation: the reference (real) images and the generated ones, read as
8-bit RGB at the evaluation's size. Ids are file stems, which match caption ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def list_images(folder: str | Path, what: str) -> dict[str, Path]:
    """Stem -> file for every image in ``folder`` (not recursive), sorted by stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise InputError(f"{what} folder {folder} has two images named {path.stem!r} "
                                 f"({found[path.stem].name}, {path.name})")
            found[path.stem] = path
    if not found:
        raise InputError(f"{what} folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def read_rgb(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the image as RGB, resized with bicubic filtering if it is not
    already that size (Txt2Img-MHN's protocol evaluates at 256 px)."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)
