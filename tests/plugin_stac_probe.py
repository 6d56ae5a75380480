"""QGIS's own STAC support on a batch's collection (QGIS 3.40+, in a Debian chroot): a STAC
connection to the local collection.json (a file:// URL) in the Browser's STAC provider, its
items fetched as the Browser fetches them, the layer URIs an item offers for dragging, and
each asset opened as a raster layer (GDAL; the file:// URI as a local path).

The STAC data items and their provider have no Python bindings in 3.40 and are registered by
the QGIS application only, so this runs inside the application: tools/qgis_chroot.sh starts
`qgis --code` under xvfb-run with T2E_STAC_URL (the collection's file:// URL). Prints raw
observations as one JSON object on its last stdout line; tests/test_qgis_newer.py judges them.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsSettingsTree,
)
from qgis.PyQt.QtCore import QUrl

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")
report: dict = {"qgis": Qgis.QGIS_VERSION, "python": sys.version.split()[0]}


def describe(layer: QgsRasterLayer) -> dict:
    to_wgs84 = QgsCoordinateTransform(layer.crs(), WGS84, QgsProject.instance())
    box = to_wgs84.transformBoundingBox(layer.extent())
    return {"name": layer.name(), "source": layer.source(),
            "provider": layer.providerType(), "valid": layer.isValid(),
            "bands": layer.bandCount(), "authid": layer.crs().authid(),
            "size": [layer.width(), layer.height()],
            "bbox_wgs84": [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()]}


def run() -> None:
    url = os.environ["T2E_STAC_URL"]
    connections = QgsSettingsTree.node("connections").childNode("stac")
    connections.childSetting("url").setValue(url, ["batch"])
    provider = QgsApplication.dataItemProviderRegistry().provider("STAC")
    report["provider"] = provider is not None
    root = provider.createDataItem("", None)
    (connection,) = [c for c in root.createChildren() if c.name() == "batch"]
    children = connection.createChildren()  # fetches collection.json, as the Browser does
    report["collection"] = {"path": connection.path(), "tooltip": connection.toolTip(),
                            "children": [[type(c).__name__, c.name(), c.path()]
                                         for c in children]}
    items = report["items"] = []
    for child in children:
        seen = {"name": child.name(), "path": child.path()}
        items.append(seen)
        try:
            errors = child.createChildren()  # fetches the item (error items if it cannot)
            seen["errors"] = [e.name() for e in errors]
            seen["tooltip"] = child.toolTip()
            seen["drag_enabled"] = child.hasDragEnabled()
            uris = child.mimeUris()
            seen["uris"] = [{"layerType": u.layerType, "providerKey": u.providerKey,
                             "name": u.name, "uri": u.uri} for u in uris]
            seen["opened"] = []
            for u in uris:
                path = QUrl(u.uri).toLocalFile() if u.uri.startswith("file:") else u.uri
                layer = QgsRasterLayer(path, u.name, u.providerKey or "gdal")
                seen["opened"].append(describe(layer))
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it
            seen["error"] = traceback.format_exc()


try:
    run()
except Exception:  # noqa: BLE001 - reported to the test, which fails on it
    report["error"] = traceback.format_exc()
print(json.dumps(report), flush=True)
os._exit(0)  # the application's own exit can crash headless; the report is out
