"""The QGIS side of geometry, one copy for the dock and the Processing algorithms: polygons as
GeoJSON in a raster's CRS, ground distances on the ellipsoid, and a raster written by QGIS
into a GeoTIFF (temp name, checked, renamed; nothing partial left)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsDistanceArea,
    QgsGeometry,
    QgsPointXY,
    QgsRasterFileWriter,
    QgsRectangle,
)

from .core.contract.files import place_file, remove_quietly
from .core.init_image import temp_name

NO_ERROR = getattr(QgsRasterFileWriter, "WriterError", QgsRasterFileWriter).NoError


def geojson_geometries(pairs: Iterable[tuple[QgsGeometry, QgsCoordinateReferenceSystem]],
                       crs: QgsCoordinateReferenceSystem,
                       transform_context: QgsCoordinateTransformContext) -> list[dict]:
    """(geometry, its CRS) pairs as GeoJSON geometries in ``crs``; empty ones are skipped.
    ValueError in the user's words for one that cannot be brought into ``crs``."""
    out = []
    for geometry, source_crs in pairs:
        if geometry is None or geometry.isNull() or geometry.isEmpty():
            continue
        geometry = QgsGeometry(geometry)  # the caller's stays as it was
        if source_crs != crs:
            try:
                geometry.transform(QgsCoordinateTransform(source_crs, crs, transform_context))
            except QgsCsException:
                raise ValueError(
                    f"the polygons cannot be brought into the raster's CRS "
                    f"({crs.authid() or crs.description()}): are they far outside it?"
                ) from None
        out.append(json.loads(geometry.asJson()))
    return out


def source_geojson(source, crs: QgsCoordinateReferenceSystem,
                   transform_context: QgsCoordinateTransformContext) -> list[dict]:
    """A Processing feature source's geometries as GeoJSON in ``crs``."""
    source_crs = source.sourceCrs()
    return geojson_geometries(((f.geometry(), source_crs) for f in source.getFeatures()),
                              crs, transform_context)


def geojson_bounds(geometries: list[dict]) -> QgsRectangle:
    """The bounding box of GeoJSON polygons (their CRS's units)."""
    xs, ys = [], []

    def walk(coords) -> None:
        if coords and isinstance(coords[0], (int, float)):
            xs.append(coords[0])
            ys.append(coords[1])
            return
        for part in coords:
            walk(part)

    for geometry in geometries:
        walk(geometry.get("coordinates") or [])
    return QgsRectangle(min(xs), min(ys), max(xs), max(ys))


def distance_area(crs: QgsCoordinateReferenceSystem,
                  transform_context: QgsCoordinateTransformContext) -> QgsDistanceArea:
    """Distances in ``crs`` measured on its own ellipsoid (as the engine measures, with
    pyproj's crs.get_geod()), WGS84 where the CRS names none QGIS can use."""
    area = QgsDistanceArea()
    area.setSourceCrs(crs, transform_context)
    area.setEllipsoid(crs.ellipsoidAcronym() or "WGS84")
    if not area.willUseEllipsoid():
        area.setEllipsoid("WGS84")
    return area


def ground_spans(crs: QgsCoordinateReferenceSystem,
                 transform_context: QgsCoordinateTransformContext, centre: QgsPointXY,
                 dx: float, dy: float) -> tuple[float, float]:
    """Ground metres of a horizontal span ``dx`` and a vertical span ``dy`` (CRS units)
    centred on ``centre``."""
    area = distance_area(crs, transform_context)
    x, y = centre.x(), centre.y()
    return (area.measureLine(QgsPointXY(x - dx / 2, y), QgsPointXY(x + dx / 2, y)),
            area.measureLine(QgsPointXY(x, y - dy / 2), QgsPointXY(x, y + dy / 2)))


def geotiff_writer(path: Path, options: list[str]) -> QgsRasterFileWriter:
    writer = QgsRasterFileWriter(str(path))
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(options)
    return writer


def write_checked_geotiff(path: Path, write: Callable[[Path], bool],
                          check: Callable[[Path], bool], failure: str) -> Path:
    """``write(temp)`` a GeoTIFF beside ``path``, ``check(temp)`` it, then rename it to
    ``path`` (never replacing a file); ValueError(``failure``) when either says no. The temp
    file and GDAL's side file of its name (statistics QGIS computed) go whatever happens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        if not write(tmp) or not tmp.is_file() or not check(tmp):
            raise ValueError(failure)
        place_file(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
            remove_quietly(leftover)
    return path
