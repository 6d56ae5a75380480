"""The option groups subcommands share (sampling, speed, output, raster job, mask) and the
argument types they parse with: one spelling of each option, its default and its help."""

from __future__ import annotations

import argparse

from engine.model.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES
from text2earth_qgis.core.contract import scale
from text2earth_qgis.core.contract.tiles import DEFAULT_OVERLAP, DEFAULT_TILE

RANK_MODEL_DEFAULT = ("(default: $TEXT2EARTH_RANK_MODEL, else lcybuaa/Git-RSCLIP when "
                      "already on this machine)")


def bbox(text: str) -> tuple[float, float, float, float]:
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"expected XMIN,YMIN,XMAX,YMAX, got {text!r}")
    try:
        return tuple(float(p) for p in parts)  # type: ignore[return-value]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected four numbers, got {text!r}") from None


def map_scale(text: str) -> float:
    try:
        return scale.parse_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolution(text: str) -> float:
    cleaned = text.strip().lower().removesuffix("m/px").removesuffix("m").strip()
    try:
        value = float(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected metres per pixel, got {text!r}") from None
    return value


def strengths(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers in 0..1 separated by commas, got {text!r}") from None


def bands(text: str) -> list[int]:
    try:
        numbers = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected band numbers such as 3,2,1, got {text!r}") \
            from None
    if len(numbers) not in (1, 3):
        raise argparse.ArgumentTypeError("give three bands (R,G,B) or one (gray)")
    return numbers


def speed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="arithmetic: auto picks fp16 on CUDA, bf16 on CPUs with native "
                        "bf16, else fp32 (the exact mode, reproducing reference pixels)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the UNet (default: on CUDA only)")


def sampling_arguments(p: argparse.ArgumentParser, guidance: float) -> None:
    p.add_argument("--seed", type=int, default=None, help="random if not given (recorded)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=guidance)
    p.add_argument("--scheduler", default=DEFAULT_SCHEDULER, choices=SCHEDULER_NAMES)


def output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output GeoTIFF path (a new file)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--offline", action="store_true", help="never try to download weights")
    p.add_argument("--demo-fallback", action="store_true",
                   help="without real weights, run the same job on built-in tiny random weights "
                        "(output named and tagged as a pipeline check)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def raster_job_arguments(p: argparse.ArgumentParser) -> None:
    """What edit, extend and restyle share."""
    p.add_argument("--raster", required=True, help="the source raster (never modified)")
    p.add_argument("--prompt", required=True, help="what the new pixels show")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--level", type=int, default=None,
                   help="zoom level 10..18 (default: from the raster's ground resolution)")
    p.add_argument("--bands", type=bands, default=None,
                   help="1-based R,G,B bands (default: from the colour interpretation)")
    sampling_arguments(p, guidance=3.5)
    p.add_argument("--model", default=None,
                   help="inpainting model, hub id or local folder "
                        "(default: lcybuaa/Text2Earth-inpainting)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    speed_arguments(p)
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help=f"model window size in px (default {DEFAULT_TILE}, the training size; "
                        "larger windows are untested with the real weights)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help=f"window overlap in px (default {DEFAULT_OVERLAP})")
    p.add_argument("--max-pixels", type=int, default=None, help="refuse larger work")
    p.add_argument("--rank-model", default=None,
                   help="Git-RSCLIP for the regenerated areas' score, hub id, folder or none "
                        + RANK_MODEL_DEFAULT)
    output_arguments(p)


def mask_arguments(p: argparse.ArgumentParser) -> None:
    """How the mask polygons are read and grown (edit, restyle): all but --mask itself."""
    p.add_argument("--mask-crs", default=None,
                   help="CRS of the mask (default: the file's; GeoJSON lon/lat; WKT the "
                        "raster's)")
    p.add_argument("--mask-layer", default=None, help="layer of a multi-layer vector file")
    p.add_argument("--dilate", type=int, default=4, help="grow the polygons by N pixels")
    p.add_argument("--feather", type=int, default=4,
                   help="fade new pixels in over N pixels at the grown mask's edge")
