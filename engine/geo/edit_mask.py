"""The polygons of an edit: read (GeoJSON, WKT, or any vector file OGR reads, such as a
GeoPackage), brought into the raster's CRS, and burnt into pixel masks with a grown, soft edge.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio.crs
from affine import Affine
from pyproj import CRS
from rasterio.features import rasterize
from rasterio.warp import transform_geom

from engine.errors import InputError

GEOJSON_CRS = "OGC:CRS84"  # RFC 7946: GeoJSON is lon/lat unless said otherwise
POLYGONAL = {"Polygon", "MultiPolygon"}


def _geometries_of(obj: dict) -> list[dict]:
    if not isinstance(obj, dict):
        raise InputError("the mask must be a GeoJSON object (geometry, Feature or "
                         f"FeatureCollection), got a JSON {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "FeatureCollection":
        return [g for f in obj.get("features") or [] for g in _geometries_of(f)]
    if kind == "Feature":
        return _geometries_of(obj["geometry"]) if obj.get("geometry") else []
    if kind == "GeometryCollection":
        return [g for part in obj.get("geometries") or [] for g in _geometries_of(part)]
    if kind in POLYGONAL:
        return [obj] if _has_points(obj.get("coordinates")) else []
    raise InputError(f"the mask must be polygons; it holds a {kind or 'shapeless object'}")


def _has_points(coords) -> bool:
    if not isinstance(coords, (list, tuple)) or not coords:
        return False
    if isinstance(coords[0], (int, float)):
        return True
    return any(_has_points(part) for part in coords)


def _legacy_crs(obj: dict) -> str | None:
    """The pre-RFC 7946 'crs' member that QGIS and GDAL still write."""
    name = ((obj.get("crs") or {}).get("properties") or {}).get("name")
    return name if isinstance(name, str) else None


def _from_geojson(obj) -> tuple[list[dict], str]:
    """(polygons, CRS): the object's legacy 'crs' member, else lon/lat as RFC 7946 says."""
    geoms = _geometries_of(obj)  # refuses anything that is not a GeoJSON object first
    return geoms, _legacy_crs(obj) or GEOJSON_CRS


def read_mask(mask: str | dict, mask_crs: str | None, layer: str | None = None,
              default_crs: CRS | None = None) -> tuple[list[dict], CRS]:
    """(polygon geometries as GeoJSON dicts, their CRS) from a GeoJSON object, a WKT string,
    or a path to a GeoJSON or OGR vector file.

    CRS, first found wins: ``mask_crs``; the file's or object's own; lon/lat for GeoJSON;
    ``default_crs`` (the raster's) for WKT.
    """
    own_crs: str | CRS | None = None
    if isinstance(mask, dict):
        geoms, own_crs = _from_geojson(mask)
    elif isinstance(mask, str) and mask.lstrip()[:1] in ("{", "["):
        try:
            obj = json.loads(mask)
        except ValueError as exc:
            raise InputError(f"the mask is not valid GeoJSON: {exc}") from None
        geoms, own_crs = _from_geojson(obj)
    elif isinstance(mask, str) and _looks_like_wkt(mask):
        geoms, own_crs = _from_wkt(mask), default_crs
    else:
        geoms, own_crs = _read_file(Path(str(mask)).expanduser(), layer)
    try:
        crs = CRS.from_user_input(mask_crs) if mask_crs else CRS.from_user_input(own_crs)
    except Exception as exc:  # noqa: BLE001 - pyproj raises several kinds for bad input
        raise InputError(f"the mask's CRS {mask_crs or own_crs!r} is not known: {exc}") from None
    if not geoms:
        raise InputError("the mask holds no polygons")
    return geoms, crs


def _looks_like_wkt(text: str) -> bool:
    head = text.lstrip().upper()
    return head.startswith(("POLYGON", "MULTIPOLYGON", "GEOMETRYCOLLECTION", "POINT",
                            "LINESTRING", "MULTIPOINT", "MULTILINESTRING", "SRID="))


def _from_wkt(text: str) -> list[dict]:
    import shapely
    from shapely.geometry import mapping

    text = text.strip()
    if text.upper().startswith("SRID="):
        raise InputError("EWKT (SRID=...) is not read: give the CRS with --mask-crs")
    try:
        geometry = shapely.from_wkt(text)
    except shapely.errors.GEOSException as exc:
        raise InputError(f"the mask is not valid WKT: {exc}") from None
    return _geometries_of(mapping(geometry))


def _read_file(path: Path, layer: str | None) -> tuple[list[dict], str | CRS | None]:
    if not path.exists():
        raise InputError(
            f"the mask {str(path)!r} is neither a file, GeoJSON, nor WKT (POLYGON ((...)))"
        )
    if path.suffix.lower() in (".geojson", ".json"):
        try:
            obj = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path.name} as GeoJSON: {exc}") from None
        return _from_geojson(obj)
    import pyogrio
    import shapely
    from shapely.geometry import mapping

    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, layer=layer, read_geometry=True,
                                           columns=[])
    except Exception as exc:  # noqa: BLE001 - pyogrio's errors name the problem well
        raise InputError(f"cannot read the mask file {path.name}: {exc}") from None
    geoms = [g for blob in wkb if blob is not None
             for g in _geometries_of(mapping(shapely.from_wkb(blob)))]
    return geoms, meta.get("crs")


def to_raster_crs(geoms: list[dict], crs: CRS, raster_crs: CRS) -> list[dict]:
    if crs == raster_crs:
        return geoms
    src = rasterio.crs.CRS.from_wkt(crs.to_wkt())
    dst = rasterio.crs.CRS.from_wkt(raster_crs.to_wkt())
    return [transform_geom(src, dst, g) for g in geoms]


def polygon_parts(geom: dict) -> list[dict]:
    """A MultiPolygon's polygons, each on its own (a Polygon: itself)."""
    if geom["type"] == "MultiPolygon":
        return [{"type": "Polygon", "coordinates": rings} for rings in geom["coordinates"]
                if _has_points(rings)]
    return [geom]


def pixel_bounds(geoms: list[dict], transform: Affine) -> tuple[float, float, float, float]:
    """(col0, row0, col1, row1) of the polygons in the grid's pixel space."""
    inverse = ~transform
    cols, rows = [], []

    def walk(coords) -> None:
        if coords and isinstance(coords[0], (int, float)):
            c, r = inverse * (coords[0], coords[1])
            cols.append(c)
            rows.append(r)
        else:
            for part in coords:
                walk(part)

    for g in geoms:
        walk(g["coordinates"])
    return min(cols), min(rows), max(cols), max(rows)


def burn(geoms: list[dict], transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """1 on every pixel a polygon touches (so thin features are not lost), else 0."""
    return rasterize(((g, 1) for g in geoms), out_shape=shape, transform=transform,
                     all_touched=True, fill=0, dtype="uint8")


def _box_count(mask: np.ndarray, radius: int) -> np.ndarray:
    """How many pixels of the (2r+1)^2 square around each pixel are set (outside: unset);
    from an integral image, so the cost does not grow with the radius."""
    size = 2 * radius + 1
    padded = np.pad(mask.astype(np.int64), radius)
    integral = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
            + integral[:-size, :-size])


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The mask grown by ``pixels`` in every direction (a square neighbourhood)."""
    if pixels <= 0:
        return mask
    return (_box_count(mask, pixels) > 0).astype(np.uint8)


def soft_edge(region: np.ndarray, feather: int) -> np.ndarray:
    """Weight of the new pixels in [0, 1]: rising by 1/(feather+1) per pixel from the
    region's edge inwards, 1 from ``feather`` pixels in, exactly 0 outside it (so nothing
    outside changes by even one value)."""
    if feather <= 0:
        return region.astype(np.float32)
    depth = np.zeros(region.shape, np.float32)  # pixels to the outside, counted to feather
    for k in range(1, feather + 1):
        inside = _box_count(region, k) == (2 * k + 1) ** 2
        if not inside.any():
            break
        depth += inside
    weight = np.minimum(1.0, (depth + 1.0) / (feather + 1.0))
    return np.where(region > 0, weight, 0.0).astype(np.float32)
