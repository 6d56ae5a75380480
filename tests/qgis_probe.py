"""Open rasters with QGIS itself and print what it sees, as JSON.

Run in a subprocess: QGIS links Debian's GDAL, rasterio its own, and the two are kept out of
one process.
"""

import json
import sys

from qgis.core import (
    QgsApplication,
    QgsCoordinateTransformContext,
    QgsDistanceArea,
    QgsPointXY,
    QgsRasterLayer,
)

app = QgsApplication([], False)
app.initQgis()
out = []
for p in sys.argv[1:]:
    layer = QgsRasterLayer(p, "probe", "gdal")
    e = layer.extent()
    # Ground size of the centre pixel, measured by QGIS on the WGS 84 ellipsoid.
    da = QgsDistanceArea()
    da.setSourceCrs(layer.crs(), QgsCoordinateTransformContext())
    da.setEllipsoid("WGS84")
    c = e.center()
    dx, dy = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    ground_x = da.measureLine(QgsPointXY(c.x() - dx / 2, c.y()), QgsPointXY(c.x() + dx / 2, c.y()))
    ground_y = da.measureLine(QgsPointXY(c.x(), c.y() - dy / 2), QgsPointXY(c.x(), c.y() + dy / 2))
    out.append(
        dict(
            valid=layer.isValid(),
            extent=[e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()],
            authid=layer.crs().authid(),
            width=layer.width(),
            height=layer.height(),
            bands=layer.bandCount(),
            xres=layer.rasterUnitsPerPixelX(),
            yres=layer.rasterUnitsPerPixelY(),
            ground_x_m=ground_x,
            ground_y_m=ground_y,
            metadata=layer.dataProvider().htmlMetadata() if layer.isValid() else "",
        )
    )
print(json.dumps(out))
