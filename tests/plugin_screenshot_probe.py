"""Take docs/screenshot.png: a map window with the Text2Earth dock and a generated layer.

Run it under a real (virtual) X server, from the repository root:

    T2E_MODEL=/path/to/checkpoint xvfb-run -a -s "-screen 0 1600x1200x24" \
        env QT_QPA_PLATFORM=xcb .venv/bin/python tests/plugin_screenshot_probe.py [OUT.png]

T2E_MODEL is a checkpoint folder (a tiny random one draws noise-like colours: expected).
Never imports rasterio. Prints one JSON object on its last line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from unittest import mock

sys.modules.setdefault("mock", mock)  # qgis.testing.mocked imports the old 'mock' package
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, "/usr/share/qgis/python/plugins")

from qgis.testing import start_app  # noqa: E402
from qgis.testing.mocked import get_iface  # noqa: E402

app = start_app()
iface = get_iface()

from probe_support import wait_for  # noqa: E402
from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRectangle  # noqa: E402
from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsMessageBar  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402

import text2earth_qgis  # noqa: E402
from text2earth_qgis.core.job_spec import LEVEL  # noqa: E402

OUT_PNG = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshot.png"
WORK = Path(os.environ.get("T2E_WORK") or tempfile.mkdtemp(prefix="t2e-shot-"))
UTM = QgsCoordinateReferenceSystem("EPSG:32632")
BBOX = (456800.0, 5427400.0, 457400.0, 5427850.0)  # 600 x 450 m near Karlsruhe


def pump(condition=lambda: True, timeout=120.0):
    return wait_for(condition, timeout)


window = iface.mainWindow()
window.setWindowTitle("QGIS — Text2Earth")
canvas = iface.mapCanvas()
canvas.setCanvasColor(QColor("white"))
window.setCentralWidget(canvas)
iface.addDockWidget.side_effect = window.addDockWidget
iface.removeDockWidget.side_effect = window.removeDockWidget
iface.messageBar.return_value = QgsMessageBar()
bridge = QgsLayerTreeMapCanvasBridge(QgsProject.instance().layerTreeRoot(), canvas)
QgsProject.instance().setCrs(UTM)
canvas.setDestinationCrs(UTM)
window.resize(1440, 960)
window.show()

plugin = text2earth_qgis.classFactory(iface)
settings = plugin.manager.settings
settings.python = sys.executable
settings.model = os.environ["T2E_MODEL"]
settings.device = "cpu"
settings.token_file = str(WORK / "token")
settings.staging_dir = str(WORK / "staging")
plugin.initGui()
plugin.toggle_action.trigger()  # opens the dock, on the right, and connects the engine
dock = plugin.dock
pump(lambda: dock.engine_task is None)

view = QgsRectangle(*BBOX)
view.scale(1.6)
canvas.setExtent(view)
pump(timeout=0.3)
dock.generate.prompt_edit.setPlainText("a river meanders through dense green forest")
dock.generate.negative_edit.setText("clouds, haze")
dock.generate.seed_spin.setValue(20241122)
dock.generate.steps_spin.setValue(3)
dock.generate.mode_combo.setCurrentIndex(dock.generate.mode_combo.findData(LEVEL))
dock.generate.level_spin.setValue(16)
dock.generate.folder_widget.setFilePath(str(WORK / "out"))
dock.generate.set_extent(QgsRectangle(*BBOX), UTM)
dock.generate.generate_button.click()
pump(lambda: dock.generate.task is None)

layers = [layer.name() for layer in QgsProject.instance().mapLayers().values()]
dock.generate.set_extent(QgsRectangle(*BBOX), UTM)  # keep the orange outline of the extent on show
canvas.refresh()
pump(lambda: False, timeout=1.0)
canvas.waitWhileRendering()
pump(lambda: False, timeout=0.5)
OUT_PNG.parent.mkdir(parents=True, exist_ok=True)
saved = window.grab().save(str(OUT_PNG))
report = {
    "saved": saved, "path": str(OUT_PNG), "layers": layers,
    "status": dock.generate.status_label.text(), "engine": dock.engine_bar.label.text(),
    "window": [window.width(), window.height()],
    "dock_area": int(window.dockWidgetArea(dock)),
    "heavy": sorted(m for m in ("rasterio", "torch") if m in sys.modules),
}
plugin.unload()
print(json.dumps(report))
