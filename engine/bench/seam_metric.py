"""Seam metric for a generated scene: are the window borders visible?

    python -m engine.bench.seam_metric scene.tif

Mean gradient magnitude across the lines where windows start and where their shared strips
end, divided by the same mean over every other line. 1.0 means the borders are as smooth as
the rest of the image; a visible seam pushes it above 1. Only meaningful on output of the real
weights (random weights make noise). Reads the window layout from the file's TEXT2EARTH_ tags.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import rasterio

from text2earth_qgis.core.contract.tiles import plan_scene


def border_lines(starts: list[int], overlap: int, size: int) -> list[int]:
    """Output-pixel indices i where the step from i-1 to i crosses a window border."""
    lines = set()
    for start in starts:
        for line in (start, start + overlap):
            if 0 < line < size:
                lines.add(line)
    return sorted(lines)


def seam_ratio(image: np.ndarray, tile: int, overlap: int) -> dict:
    """``image`` (h, w, bands) of a scene planned with ``tile`` and ``overlap``."""
    height, width = image.shape[:2]
    plan = plan_scene(width, height, tile, overlap)
    col_off, row_off = plan.offset
    gray = image.astype(np.float64).mean(axis=2)
    dx = np.abs(np.diff(gray, axis=1))  # dx[:, i-1] is the step from column i-1 to i
    dy = np.abs(np.diff(gray, axis=0))
    cols = border_lines([ix * plan.stride - col_off for ix in range(1, plan.nx)], overlap, width)
    rows = border_lines([iy * plan.stride - row_off for iy in range(1, plan.ny)], overlap, height)
    col_mask = np.zeros(dx.shape[1], bool)
    col_mask[[c - 1 for c in cols]] = True
    row_mask = np.zeros(dy.shape[0], bool)
    row_mask[[r - 1 for r in rows]] = True
    across = np.concatenate([dx[:, col_mask].ravel(), dy[row_mask, :].ravel()])
    inside = np.concatenate([dx[:, ~col_mask].ravel(), dy[~row_mask, :].ravel()])
    if across.size == 0:
        return {"ratio": None, "border_lines": 0}
    return {
        "ratio": float(across.mean() / max(inside.mean(), 1e-12)),
        "across_borders": float(across.mean()),
        "inside_windows": float(inside.mean()),
        "border_lines": len(cols) + len(rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench.seam_metric", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", help="a GeoTIFF written by text2earth generate")
    parser.add_argument("--tile", type=int, help="override the file's TEXT2EARTH_TILE")
    parser.add_argument("--overlap", type=int, help="override the file's TEXT2EARTH_OVERLAP")
    args = parser.parse_args(argv)
    with rasterio.open(args.scene) as ds:
        tags = ds.tags()
        image = np.moveaxis(ds.read(), 0, 2)
    tile = args.tile or int(tags.get("TEXT2EARTH_TILE", 0))
    overlap = args.overlap if args.overlap is not None else int(tags.get("TEXT2EARTH_OVERLAP", 0))
    if not tile:
        print("no window layout in the tags (a single-canvas image has no seams); give --tile",
              file=sys.stderr)
        return 2
    result = seam_ratio(image, tile, overlap)
    print(f"seam ratio {result['ratio']:.3f} over {result['border_lines']} border lines "
          f"(1.0 = invisible; method {tags.get('TEXT2EARTH_SCENE_METHOD', '?')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
