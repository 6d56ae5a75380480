"""`text2earth score --raster X.tif --prompt P`: how well a raster shows a prompt (Git-RSCLIP)."""

from __future__ import annotations

import argparse
import json


def add_rank_arguments(p: argparse.ArgumentParser) -> None:
    """What score and label share: the raster, its colours, the rank model."""
    p.add_argument("--raster", required=True, help="the raster (never modified)")
    p.add_argument("--bands", default=None,
                   help="1-based R,G,B bands (default: from the colour interpretation)")
    p.add_argument("--rank-model", default=None,
                   help="Git-RSCLIP, hub id or local folder (default: $TEXT2EARTH_RANK_MODEL, "
                        "else lcybuaa/Git-RSCLIP)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--offline", action="store_true", help="never try to download the model")


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="Git-RSCLIP's probability that a raster shows a prompt")
    add_rank_arguments(p)
    p.add_argument("--prompt", required=True, help="what the raster should show")
    p.set_defaults(handler=run)


def parse_bands(text: str | None) -> list[int] | None:
    from engine.errors import InputError

    if not text:
        return None
    try:
        bands = [int(b) for b in text.replace(" ", "").split(",") if b]
    except ValueError:
        raise InputError(f"expected band numbers such as 3,2,1, got {text!r}") from None
    if len(bands) != 3:
        raise InputError(f"give three bands (R,G,B), got {text!r}")
    return bands


def run(args) -> int:
    from engine.errors import InputError
    from engine.model.pipeline import split_level_prefix
    from engine.quality.rank_model import load_rank_model
    from engine.quality.raster_rgb import open_rgb, score_raster

    _, prompt = split_level_prefix(args.prompt)
    if not prompt.strip():
        raise InputError("the prompt is empty: say what the raster should show")
    bands = parse_bands(args.bands)
    with open_rgb(args.raster, bands):  # a bad raster fails before the model loads
        pass
    rank = load_rank_model(args.rank_model, args.device, args.offline or None)
    result = score_raster(rank, args.raster, prompt.strip(), bands)
    print(json.dumps(result.as_dict() | {
        "window_scores": list(result.window_scores), "prompt": prompt.strip(),
        "raster": str(args.raster), "rank_model": rank.checkpoint.model_id,
        "about": ("sigmoid(logits_per_image) of Git-RSCLIP (SigLIP) for the whole raster"
                  if result.method == "single" else
                  f"mean of sigmoid(logits_per_image) over {result.windows} windows of "
                  f"{result.window_size} px (the model's input size)"),
    }, indent=2))
    return 0
