"""Prompt regions: (polygon, prompt) pairs, so a scene mixes "farmland" here and "river" there.

Each window takes the prompt of the region covering most of it (the job's prompt where no
region covers half of it); neighbouring windows condition on each other through their shared
strips, which is what blends the change of prompt at region borders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from pyproj import CRS
from rasterio.features import rasterize
from rasterio.warp import transform_geom

from engine.errors import InputError
from engine.geo.tiling import ScenePlan

GEOJSON_CRS = "EPSG:4326"  # RFC 7946: GeoJSON is longitude, latitude on WGS 84
CELLS = 32  # each window is judged on a 32 x 32 grid of cells


@dataclass(frozen=True)
class PromptRegion:
    geometry: dict  # GeoJSON geometry in the output grid's CRS
    prompt: str


def parse_regions(items: list[dict], source_crs: str, grid_crs: CRS) -> list[PromptRegion]:
    """[{"geometry": GeoJSON geometry, "prompt": "..."}] in ``source_crs`` -> grid CRS."""
    regions = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not (
            item["prompt"].strip()
        ):
            raise InputError(f"prompt region {number} needs a non-empty 'prompt'")
        geometry = item.get("geometry")
        if not isinstance(geometry, dict) or geometry.get("type") not in (
            "Polygon", "MultiPolygon"
        ):
            raise InputError(f"prompt region {number} needs a Polygon or MultiPolygon geometry")
        try:
            moved = transform_geom(source_crs, grid_crs.to_wkt(), geometry)
        except Exception as exc:  # noqa: BLE001 - GDAL raises its own classes (CPLE_*) too
            raise InputError(
                f"prompt region {number}: cannot read or reproject its geometry from "
                f"{source_crs} ({exc}); GeoJSON coordinates are longitude, latitude"
            ) from None
        regions.append(PromptRegion(moved, item["prompt"].strip()))
    return regions


def read_regions_file(path: str | Path) -> tuple[list[dict], str]:
    """(items, their CRS) from a GeoJSON FeatureCollection whose features carry a 'prompt'."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read prompt regions from {path}: {exc}") from None
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, list):
        raise InputError(f"{path} is not a GeoJSON FeatureCollection")
    legacy_crs = ((data.get("crs") or {}).get("properties") or {}).get("name")
    items = [{"geometry": f.get("geometry"), "prompt": (f.get("properties") or {}).get("prompt")}
             for f in features if isinstance(f, dict)]
    return items, legacy_crs or GEOJSON_CRS


def window_prompts(plan: ScenePlan, canvas_transform: Affine, regions: list[PromptRegion],
                   default: str) -> dict[str, str]:
    """The prompt of each window (by its key), from the region covering most of it."""
    if not regions:
        return {}
    out = {}
    cell = plan.tile / CELLS
    shapes = [(r.geometry, i + 1) for i, r in enumerate(regions)]
    for window in plan.windows():
        transform = canvas_transform * Affine.translation(window.col, window.row) * \
            Affine.scale(cell)
        burned = rasterize(shapes, out_shape=(CELLS, CELLS), transform=transform, fill=0,
                           dtype="int32")
        counts = np.bincount(burned.ravel(), minlength=len(regions) + 1)
        best = int(counts[1:].argmax()) + 1
        out[window.key] = regions[best - 1].prompt if counts[best] * 2 >= burned.size \
            else default
    return out
