"""The windows' labels as a vector grid (GeoJSON or GeoPackage): one polygon per window, in the
raster's CRS in a GeoPackage (1.2, which every GDAL and QGIS in use reads cleanly), in WGS 84
lon/lat in GeoJSON (RFC 7946); written beside the target under a temp name, read back, then
renamed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import shapely

from engine.errors import InputError, WriteError
from engine.geo.geotiff import check_name_limits, temp_stem

DRIVERS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG"}
WRITE_OPTIONS = {
    # RFC 7946: GDAL reprojects to WGS 84 lon/lat (what GeoJSON readers assume), no crs member
    "GeoJSON": {"layer_options": {"RFC7946": "YES"}},
    # GeoPackage 1.2: GDAL 3.6 / QGIS 3.22 open a newer one with a "partially supported" warning
    "GPKG": {"dataset_options": {"VERSION": "1.2"}},
}


def check_grid_path(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse early a target we could not or must not write."""
    path = Path(path).expanduser()
    check_name_limits(path)
    if path.suffix.lower() not in DRIVERS:
        raise InputError(f"the grid {path} must end in .geojson or .gpkg")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name ending in .geojson or .gpkg")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists: choose another name, or pass --overwrite")
    if not path.parent.is_dir():
        raise InputError(f"folder {path.parent} does not exist")
    return path


def window_polygon(transform, row: int, col: int, height: int, width: int) -> shapely.Polygon:
    corners = [(col, row), (col + width, row), (col + width, row + height), (col, row + height)]
    return shapely.Polygon([transform * c for c in corners])


def write_label_grid(path: str | Path, windows: list, info, overwrite: bool = False,
                     extra: dict[str, str] | None = None) -> Path:
    """Write the grid; ``extra``: dataset metadata (what made it)."""
    import pyogrio.raw

    path = check_grid_path(path, overwrite)
    driver = DRIVERS[path.suffix.lower()]
    polygons = [window_polygon(info.transform, w.row, w.col, w.height, w.width)
                for w in windows]
    fields = ["label", "probability", "second", "second_probability", "row", "col",
              "width", "height"]
    data = [np.array([w.label for w in windows], dtype=object),
            np.array([w.probability for w in windows], dtype=np.float64),
            np.array([w.second for w in windows], dtype=object),
            np.array([w.second_probability for w in windows], dtype=np.float64),
            *(np.array([getattr(w, f) for w in windows], dtype=np.int32)
              for f in ("row", "col", "width", "height"))]
    temp = temp_stem(path.parent).with_suffix(path.suffix)
    try:
        pyogrio.raw.write(temp, shapely.to_wkb(polygons), data, fields, driver=driver,
                          geometry_type="Polygon", crs=info.crs.to_wkt(), layer="labels",
                          **WRITE_OPTIONS[driver], **(
                              {"dataset_metadata": extra} if driver == "GPKG" else {}))
        if pyogrio.read_info(temp, layer="labels")["features"] != len(windows):
            raise WriteError(f"the grid written to {temp} does not read back")
        if not overwrite and path.exists():
            raise InputError(f"{path} appeared while labelling: nothing was replaced")
        os.replace(temp, path)
    except (InputError, WriteError):
        raise
    except Exception as exc:  # noqa: BLE001 - OSError or GDAL's (pyogrio's) errors: one line
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:300]
        raise WriteError(f"could not write {path}: {reason}") from None
    finally:
        temp.unlink(missing_ok=True)
    return path
