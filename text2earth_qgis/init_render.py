"""'Start from layers': the layers the user chose, rendered by QGIS's map renderer (vector
styling, labels and all) for the extent at the output grid's size, written as a GeoTIFF the
engine starts its generation from (init_raster). Written to a temp name, checked, renamed."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsMapRendererCustomPainterJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterBlock,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QByteArray, QSize
from qgis.PyQt.QtGui import QColor, QImage, QPainter

from .qgis_geometry import geotiff_writer, write_checked_geotiff

MAX_RENDER_PX = 8192 * 8192  # beyond this, the picture would not fit a desktop's memory
BACKGROUND = QColor(255, 255, 255)  # where no layer draws: a blank map sheet
RGBA = QImage.Format.Format_RGBA8888  # bytes r, g, b, a on every platform
BYTE = Qgis.DataType.Byte


def map_settings(layers: list, extent: QgsRectangle, crs: QgsCoordinateReferenceSystem,
                 width: int, height: int) -> QgsMapSettings:
    """The renderer's settings: ``layers`` top first (as the Layers panel lists them), drawn
    for ``extent`` in ``crs`` at ``width`` x ``height`` pixels."""
    settings = QgsMapSettings()
    settings.setLayers(list(layers))
    settings.setDestinationCrs(crs)
    settings.setTransformContext(QgsProject.instance().transformContext())
    settings.setOutputSize(QSize(width, height))
    settings.setOutputDpi(96)
    settings.setExtent(extent)
    settings.setBackgroundColor(BACKGROUND)
    return settings


def render_image(settings: QgsMapSettings) -> QImage:
    size = settings.outputSize()
    image = QImage(size, RGBA)
    image.fill(BACKGROUND)
    painter = QPainter(image)
    job = QgsMapRendererCustomPainterJob(settings, painter)
    job.renderSynchronously()
    painter.end()
    return image


def render_layers_to_geotiff(layers: list, extent: QgsRectangle,
                             crs: QgsCoordinateReferenceSystem, width: int, height: int,
                             path: Path) -> Path:
    """Write what ``layers`` show over ``extent`` to ``path`` (RGB, georeferenced with the
    extent QGIS actually drew: square pixels, so at most a pixel more on one side); never
    replaces a file. ValueError in the user's words when it cannot."""
    if not layers:
        raise ValueError("tick at least one layer to start from")
    if width < 1 or height < 1 or width * height > MAX_RENDER_PX:
        raise ValueError(f"the layers would be {width:,} x {height:,} pixels: too large to "
                         "render; choose a coarser resolution or a smaller extent")
    settings = map_settings(layers, extent, crs, width, height)
    image = render_image(settings)
    drawn = settings.visibleExtent()
    data = image_bytes(image)

    def write(tmp: Path) -> bool:
        writer = geotiff_writer(tmp, ["COMPRESS=DEFLATE", "PHOTOMETRIC=RGB", "TILED=YES"])
        provider = writer.createMultiBandRaster(BYTE, width, height, drawn, crs, 3)
        ok = provider is not None and provider.isValid()
        for band in range(3) if ok else ():
            block = QgsRasterBlock(BYTE, width, height)
            block.setData(QByteArray(data[band::4]))
            ok = ok and provider.writeBlock(block, band + 1, 0, 0)
        del provider  # closes the file
        return ok

    def check(tmp: Path) -> bool:
        written = QgsRasterLayer(str(tmp), "check", "gdal")
        return written.isValid() and (
            written.width(), written.height(), written.bandCount()) == (width, height, 3)

    return write_checked_geotiff(
        path, write, check,
        f"QGIS could not write the rendered layers to {path.parent}: is the folder writable, "
        "with space left?")


def image_bytes(image: QImage) -> bytes:
    """The pixels as r, g, b, a bytes, row after row without padding."""
    image = image.convertToFormat(RGBA)
    bits = image.constBits()
    size = image.sizeInBytes() if hasattr(image, "sizeInBytes") else image.byteCount()
    bits.setsize(size)
    return bytes(bits)
