"""A raster layer with no file behind it (WMS, WMTS, XYZ, a memory or virtual raster)
rendered for an area into a GeoTIFF with QGIS's own raster writer, as the user sees it, so
the engine can edit it. The GeoTIFF stays in the output folder: it is the edit's source."""

from __future__ import annotations

import math
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
)

from .core.contract import scale
from .core.contract.files import check_output_folder, unused_name
from .core.job_spec import slug
from .qgis_geometry import (  # noqa: F401 - geojson_bounds: where the edit tab finds it
    NO_ERROR,
    geojson_bounds,
    geotiff_writer,
    ground_spans,
    write_checked_geotiff,
)

WEB_MERCATOR = ("EPSG:3857", "EPSG:900913", "EPSG:102100")
# QGIS 3.22's name, else 3.40's (Qgis.RasterBandStatistic).
STAT_MAX = getattr(getattr(QgsRasterBandStats, "Stats", None), "Max", None) or getattr(
    getattr(Qgis, "RasterBandStatistic", None), "Max", None)
MAX_RENDER_PX = 8192 * 8192  # a bigger area at that level: choose a coarser level
CONTEXT = 0.25  # the model sees a quarter of the area around the polygons on every side
MIN_CONTEXT_PX = 64


def needs_render(layer) -> bool:
    """A valid raster layer with no file behind it: WMS, WMTS, XYZ, memory, virtual."""
    return layer is not None and layer.isValid() and layer.providerType() != "gdal"


def native_level(layer) -> int | None:
    """The level an XYZ layer's finest tiles are (its zmax, held to the model's 10..18);
    None for a layer that has no levels of its own (WMS, memory)."""
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    if str(parts.get("type", "")).lower() != "xyz":
        return None
    try:
        zmax = int(parts.get("zmax", scale.LEVELS[-1]))
    except (TypeError, ValueError):
        zmax = scale.LEVELS[-1]
    return min(max(zmax, scale.LEVELS[0]), scale.LEVELS[-1])


def render_level(layer, chosen: int | None) -> int:
    """The level a layer is rendered at: the chosen one, else the XYZ tiles' finest;
    ValueError for a layer with no levels of its own and none chosen."""
    if chosen is not None:
        return chosen
    level = native_level(layer)
    if level is None:
        raise ValueError(f"{layer.name()!r} has no resolution of its own (a WMS or memory "
                         "layer): choose the Google level to render it at")
    return level


def render_for_edit(layer, geometries: list[dict], level: int, folder: Path) -> Path:
    """The layer rendered around the polygons (GeoJSON in the layer's CRS) at ``level`` into
    a new GeoTIFF in ``folder``: the edit's source, kept next to the result. OutputFolderError
    (a ValueError) for a folder that cannot take it, before any rendering."""
    check_output_folder(folder)
    name = unused_name(render_name(layer.name(), level), lambda n: (folder / n).exists())
    return render_to_geotiff(layer, geojson_bounds(geometries), level, folder / name)


def pixel_size(layer, centre: QgsPointXY, level: int) -> tuple[float, float]:
    """The level's pixel at ``centre`` in the layer CRS's units (XYZ: the tiles' own)."""
    crs = layer.crs()
    if crs.authid() in WEB_MERCATOR:
        side = scale.mercator_resolution(level)
        return side, side
    to_wgs84 = QgsCoordinateTransform(crs, QgsCoordinateReferenceSystem("EPSG:4326"),
                                      QgsProject.instance())
    latitude = to_wgs84.transform(centre).y()
    ground = scale.ground_resolution(level, latitude)
    step = 1e-3 if crs.isGeographic() else 1.0
    gx, gy = ground_spans(crs, QgsProject.instance().transformContext(), centre, step, step)
    return ground / (gx / step), ground / (gy / step)


def area_to_render(bounds: QgsRectangle, layer_extent: QgsRectangle,
                   pixel: tuple[float, float]) -> QgsRectangle:
    """The polygons' bounds with context around them, snapped to whole pixels, inside the
    layer's extent."""
    grow_x = max(bounds.width() * CONTEXT, MIN_CONTEXT_PX * pixel[0])
    grow_y = max(bounds.height() * CONTEXT, MIN_CONTEXT_PX * pixel[1])
    area = QgsRectangle(bounds.xMinimum() - grow_x, bounds.yMinimum() - grow_y,
                        bounds.xMaximum() + grow_x, bounds.yMaximum() + grow_y)
    if not layer_extent.isEmpty():
        area = area.intersect(layer_extent)
    x0 = math.floor(area.xMinimum() / pixel[0]) * pixel[0]
    y0 = math.floor(area.yMinimum() / pixel[1]) * pixel[1]
    x1 = math.ceil(area.xMaximum() / pixel[0]) * pixel[0]
    y1 = math.ceil(area.yMaximum() / pixel[1]) * pixel[1]
    return QgsRectangle(x0, y0, x1, y1)


def render_name(layer_name: str, level: int) -> str:
    return f"{slug(layer_name)}_rendered_L{level}.tif"


def render_to_geotiff(layer, bounds: QgsRectangle, level: int, path: Path) -> Path:
    """Write what ``layer`` shows around ``bounds`` (its CRS) at ``level`` to ``path``
    (RGB + alpha); ValueError with the user's message when it cannot."""
    pixel = pixel_size(layer, bounds.center(), level)
    area = area_to_render(bounds, layer.extent(), pixel)
    cols, rows = round(area.width() / pixel[0]), round(area.height() / pixel[1])
    if cols < 1 or rows < 1:
        raise ValueError("the polygons are outside the layer's area")
    if cols * rows > MAX_RENDER_PX:
        raise ValueError(
            f"the area around the polygons is {cols:,} x {rows:,} pixels at level {level}: "
            "too large to render; choose a lower level or smaller polygons")
    pipe = QgsRasterPipe()
    if not pipe.set(layer.dataProvider().clone()):
        raise ValueError(f"QGIS cannot read the layer {layer.name()!r} for rendering")
    if layer.renderer() is not None:
        pipe.set(layer.renderer().clone())  # the colours the user sees, not raw values

    def write(tmp: Path) -> bool:
        writer = geotiff_writer(tmp, ["COMPRESS=DEFLATE", "PHOTOMETRIC=RGB", "ALPHA=YES",
                                      "TILED=YES"])
        return writer.writeRaster(pipe, cols, rows, area, layer.crs(),
                                  QgsProject.instance().transformContext()) == NO_ERROR

    return write_checked_geotiff(
        path, write, _shows_anything,
        f"QGIS could not render {layer.name()!r} to a GeoTIFF: is its service reachable, and "
        "does it cover the polygons?")


def _shows_anything(path: Path) -> bool:
    """False when every pixel is transparent: the service sent nothing (down, or no tiles
    there), and editing that would only invent imagery from nothing."""
    rendered = QgsRasterLayer(str(path), "rendered", "gdal")
    if not rendered.isValid():
        return False
    alpha = rendered.dataProvider().bandStatistics(4, STAT_MAX)
    return alpha.maximumValue > 0
