"""Drive the before/after swipe on a headless QGIS canvas (mocked iface, real canvas), and the
dock's size check against a connected engine's own pixel limit.

Run by tests/test_swipe.py with ``sys.executable``. Environment: T2E_WORK (an empty folder).
The rasters are written here with QGIS's own GDAL: a blue base and a red result over it.
Prints one JSON object on its last line: raw observations (canvas pixels grabbed from the
widget), judged by the test.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from unittest import mock

from osgeo import gdal, osr
from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QEvent, QPointF, Qt
from qgis.PyQt.QtGui import QMouseEvent
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication
from qgis_harness import iface, phase, pump, report, show_main_window, slot_errors, wait_for

import text2earth_qgis
from text2earth_qgis.core.job_spec import LEVEL
from text2earth_qgis.core.service.client import EngineError

WORK = Path(os.environ["T2E_WORK"])
MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")
X0, Y0 = 944000.0, 6240000.0  # the rasters' lower-left corner (EPSG:3857)
ROWS = (60, 300, 540)  # canvas rows sampled
window, canvas = show_main_window()
project = QgsProject.instance()


def write_raster(name: str, colour: tuple, left: float, bottom: float, side_m: float) -> str:
    """A one-colour RGB GeoTIFF, 1 m pixels, in EPSG:3857."""
    path = str(WORK / name)
    size = int(side_m)
    dataset = gdal.GetDriverByName("GTiff").Create(path, size, size, 3, gdal.GDT_Byte)
    dataset.SetGeoTransform((left, 1.0, 0.0, bottom + side_m, 0.0, -1.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(3857)
    dataset.SetProjection(srs.ExportToWkt())
    for band, value in enumerate(colour, start=1):
        dataset.GetRasterBand(band).Fill(value)
    dataset = None
    return path


def canvas_pixels() -> dict:
    """{row: [[x, (r, g, b)], ...]} every 10 columns, from the widget as shown."""
    image = canvas.grab().toImage()
    rows = {}
    for y in ROWS:
        rows[str(y)] = [[x, list(image.pixelColor(x, y).getRgb()[:3])]
                        for x in range(0, image.width(), 10)]
    return {"size": [image.width(), image.height()], "rows": rows}


def mouse(kind, x: int, y: int = 300) -> None:
    """A left-button press, drag move or release at (x, y) on the canvas (QTest's mouseMove
    sends no event with the button held on the offscreen platform)."""
    left = Qt.MouseButton.LeftButton
    held = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else left
    event = QMouseEvent(kind, QPointF(x, y), left, held, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(canvas.viewport(), event)
    pump(0.01)


def redrawn() -> bool:
    """Refresh the canvas and wait until it has drawn (refresh() only schedules it)."""
    drawn = []

    def note() -> None:
        drawn.append(True)

    canvas.mapCanvasRefreshed.connect(note)
    canvas.refresh()
    ok = wait_for(lambda: drawn, 30)
    canvas.mapCanvasRefreshed.disconnect(note)
    return ok


def refreshed_and_swiped(tool) -> bool:
    done = redrawn()
    done = done and wait_for(lambda: tool.item is not None and tool.item.image is not None
                             and tool.item.job is None, 30)
    pump(0.1)
    return done


plugin = text2earth_qgis.classFactory(iface)
plugin.manager.ensure_running = mock.Mock(side_effect=EngineError("no engine here"))
plugin.initGui()


@phase("swipe")
def swipe_phase(section):
    base = QgsRasterLayer(write_raster("base_blue.tif", (0, 0, 255), X0, Y0, 1000),
                          "base", "gdal")
    result = QgsRasterLayer(write_raster("result_red.tif", (255, 0, 0), X0 + 200, Y0 + 200,
                                         600), "result", "gdal")
    project.addMapLayers([base, result])
    canvas.setDestinationCrs(MERCATOR)
    canvas.setLayers([result, base])  # the result on top
    canvas.setExtent(QgsRectangle(X0 + 300, Y0 + 350, X0 + 700, Y0 + 650))  # inside the result
    redrawn()
    pump(0.1)
    section["before_swipe"] = canvas_pixels()
    # The layer's context menu offers the swipe (registered for every raster layer).
    registered = [call.args for call in iface.addCustomActionForLayerType.call_args_list
                  if call.args[0] is plugin.swipe.action]
    section["menu_action"] = [registered[0][0].text(), registered[0][3]] if registered else None
    iface.activeLayer.return_value = result
    plugin.swipe.action.trigger()
    tool = plugin.swipe.tool
    section["tool_active"] = tool is not None and canvas.mapTool() is tool
    tool.set_fraction(0.3)
    section["rendered"] = refreshed_and_swiped(tool)
    section["at_0_3"] = canvas_pixels()
    # Drag the line from 0.3 (x=240) to x=560 (0.7) with the mouse.
    viewport = canvas.viewport()
    mouse(QEvent.Type.MouseButtonPress, 241)
    for x in (300, 400, 500, 561):
        mouse(QEvent.Type.MouseMove, x)
    mouse(QEvent.Type.MouseButtonRelease, 561)
    pump(0.1)
    section["fraction_after_drag"] = tool.fraction
    section["after_drag"] = canvas_pixels()
    # Panning east: the result ends at canvas x = 600 (X0 + 800); the item is rendered
    # again for the new extent and stays in place on the map.
    canvas.setExtent(QgsRectangle(X0 + 500, Y0 + 350, X0 + 900, Y0 + 650))
    section["rendered_after_pan"] = refreshed_and_swiped(tool)
    section["after_pan"] = canvas_pixels()
    section["visible_in_tree"] = [
        project.layerTreeRoot().findLayer(layer.id()).isVisible() for layer in (base, result)]
    # Esc ends it: the map is the map again, and nothing is left on the canvas.
    canvas.setFocus()
    QTest.keyClick(viewport, Qt.Key.Key_Escape)
    pump(0.1)
    section["tool_after_esc"] = canvas.mapTool() is tool
    section["items_after_esc"] = sum(1 for item in canvas.scene().items()
                                     if type(item).__name__ == "BeforeItem")
    redrawn()
    pump(0.1)
    section["after_esc"] = canvas_pixels()
    # Removing the result while swiping ends the swipe.
    plugin.swipe.start(result)
    wait_for(lambda: plugin.swipe.tool.item.image is not None, 30)
    project.removeMapLayer(result.id())
    pump(0.1)
    section["tool_after_removal"] = canvas.mapTool() is plugin.swipe.tool
    section["items_after_removal"] = sum(1 for item in canvas.scene().items()
                                         if type(item).__name__ == "BeforeItem")


@phase("engine_limit")
def engine_limit(section):
    """The dock checks sizes against the connected engine's /health max_pixels."""
    plugin.toggle_action.setChecked(True)
    dock = plugin.dock
    wait_for(lambda: dock.engine_task is None, 60)
    gen = dock.generate
    gen.mode_combo.setCurrentIndex(gen.mode_combo.findData(LEVEL))
    gen.level_spin.setValue(15)
    rows = {}
    for name, health in (("default", {}), ("engine_2mpx", {"max_pixels": 2_000_000})):
        plugin.manager.health = health
        gen.set_extent(QgsRectangle(440000.0, 5400000.0, 470000.0, 5430000.0),
                       QgsCoordinateReferenceSystem("EPSG:32632"))
        pump(0.02)
        rows[name] = {"planned": list(getattr(gen, "planned", [])),
                      "generate_enabled": gen.generate_button.isEnabled(),
                      "tooltip": gen.generate_button.toolTip()}
    section["rows"] = rows


for step in (swipe_phase, engine_limit):
    step()
plugin.unload()
report["after_unload"] = {
    "custom_action_removed": any(call.args[0] is not None for call in
                                 iface.removeCustomActionForLayerType.call_args_list),
    "swipe": plugin.swipe}
report["slot_errors"] = slot_errors
report["heavy"] = sorted(m for m in ("rasterio", "torch") if m in sys.modules)
print(json.dumps(report, default=str))
sys.stdout.flush()
os._exit(0)
