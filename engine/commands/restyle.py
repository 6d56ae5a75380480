"""`text2earth restyle`: regenerate an existing raster from its own pixels (image-to-image
with the prompt and the level), on the source's grid, bands, data type and nodata; --mask
limits it to polygons, as `edit` does. It runs as edit and extend do (engine.commands.edit)."""

from __future__ import annotations

import argparse

from engine.commands import arguments, edit


def _strength(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") \
            from None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "restyle", help="regenerate an existing raster from its own pixels (image-to-image; "
                        "new file on the same grid)")
    p.add_argument("--strength", type=_strength, default=0.6,
                   help="how far from the source, 0..1: 0 returns it unchanged, 1 ignores its "
                        "pixels (default 0.6); int(steps * strength) steps run")
    p.add_argument("--mask", default=None,
                   help="optional polygons to restyle only inside (as edit): a vector file, "
                        "GeoJSON text or WKT; default: the whole raster")
    arguments.mask_arguments(p)
    arguments.raster_job_arguments(p)
    p.set_defaults(handler=edit.run)
