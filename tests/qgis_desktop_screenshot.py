"""Screenshots of the real QGIS desktop at 1366 x 768 with the Text2Earth dock: run by QGIS
itself (``qgis --code``), under a virtual X server; `make screenshots` starts it:

    xvfb-run -a -s "-screen 0 1366x768x24" qgis --nologo --noversioncheck --noplugins \
        --profiles-path /tmp/profile --code tests/qgis_desktop_screenshot.py

The engine is this checkout's (its .venv), serving the built-in demo weights as a fresh
install does, so the dock announces them and the layer is named a pipeline check. Writes
docs/screenshot-setup.png (the set-up dialog before it starts), docs/screenshot.png (after a
run) and docs/screenshot-edit.png (the Edit raster tab), and a
JSON report beside them in $T2E_SHOT_DIR (default: a temp folder), then exits QGIS.

docs/screenshot-variations.png shows three variations in the strip and "Start from layers"
opened. Until the engine of this checkout makes candidates itself, that run is answered by
tests/fake_service.py, whose three files are the real run's result with its bands reordered
(so the thumbnails differ); the dock around them is the real one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface

# QGIS runs this file through --code (no __file__): `make screenshots` names the checkout, and
# it is also the folder QGIS starts in.
ROOT = Path(os.environ.get("T2E_ROOT") or Path.cwd())
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from probe_support import wait_for  # noqa: E402 - the probes' one wait

DOCS = ROOT / "docs"
RASTER = os.environ.get("T2E_RASTER", str(ROOT.parent / "shared/data/rasters/RGB.byte.tif"))
WORK = Path(os.environ.get("T2E_SHOT_DIR") or tempfile.mkdtemp(prefix="t2e-desktop-"))
report: dict = {}


def wait(condition, timeout=240.0):
    return wait_for(condition, timeout)


def grab(path: Path) -> None:
    wait(lambda: False, 1.0)
    iface.mapCanvas().waitWhileRendering()
    wait(lambda: False, 0.5)
    shot = QApplication.primaryScreen().grabWindow(0)
    report[path.name] = {"saved": shot.save(str(path)), "size": [shot.width(), shot.height()]}


def main() -> None:
    window = iface.mainWindow()
    window.setGeometry(0, 0, 1366, 768)
    window.showMaximized()
    wait(lambda: False, 1.0)
    layer = QgsRasterLayer(RASTER, "Landsat scene (RGB.byte.tif)", "gdal")
    QgsProject.instance().addMapLayer(layer)
    QgsProject.instance().setCrs(layer.crs())
    centre = layer.extent().center()
    canvas = iface.mapCanvas()
    canvas.setExtent(QgsRectangle(centre.x() - 30000, centre.y() - 20000,
                                  centre.x() + 30000, centre.y() + 20000))
    import text2earth_qgis

    plugin = text2earth_qgis.classFactory(iface)
    settings = plugin.manager.settings
    settings.python = str(ROOT / ".venv" / "bin" / "python")
    settings.device = "cpu"
    settings.staging_dir = str(WORK / "staging")
    settings.token_file = str(WORK / "token")
    plugin.initGui()
    setup_dialog(plugin)
    plugin.toggle_action.trigger()
    dock = plugin.dock
    wait(lambda: dock.engine_task is None)
    gen = dock.generate
    gen.prompt_edit.setPlainText("a river meanders through dense green forest")
    gen.quality_combo.setCurrentText("Draft")
    gen.steps_spin.setValue(4)
    gen.mode_combo.setCurrentIndex(gen.mode_combo.findData("level"))
    gen.level_spin.setValue(13)
    gen.folder_widget.setFilePath(str(WORK / "out"))
    gen.set_extent(QgsRectangle(centre.x() - 9000, centre.y() - 6000,
                                centre.x() + 9000, centre.y() + 6000), layer.crs())
    report["engine"] = dock.engine_bar.label.text()
    report["demo_row_visible"] = dock.engine_bar.model_row.isVisible()
    grab(DOCS / "screenshot-extent.png")
    gen.generate_button.click()
    wait(lambda: gen.task is None)
    report["status"] = gen.status_label.text()
    report["layers"] = [lay.name() for lay in QgsProject.instance().mapLayers().values()]
    grab(DOCS / "screenshot.png")
    dock.tabs.setCurrentWidget(dock.edit_panel)
    dock.edit_panel.raster_combo.setLayer(layer)
    grab(DOCS / "screenshot-edit.png")
    report["buttons_bottom"] = bottoms(window, dock.edit_panel.run_button,
                                       dock.edit_panel.cancel_button)
    dock.tabs.setCurrentWidget(gen)
    variations(dock, gen, layer)
    report["buttons_bottom"] += bottoms(window, gen.generate_button, gen.cancel_button,
                                        gen.strip.remove_button, gen.strip.hide_button)
    report["window"] = [window.width(), window.height()]
    plugin.unload()
    (WORK / "desktop_report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report), flush=True)
    QgsApplication.instance().processEvents()
    os._exit(0)  # no "save the project?" question from QGIS's own exit


def setup_dialog(plugin) -> None:
    """Raster > Text2Earth > Set up engine… as a new user first sees it: what it will
    download and install, before anything starts (not started here)."""
    action = next(a for a in plugin.menu_actions if a.text() == "Set up engine…")
    action.trigger()
    dialog = plugin.dialogs["setup"]
    wait(lambda: dialog.plan_task is None, 60)
    report["setup_summary"] = dialog.summary_label.text()
    grab(DOCS / "screenshot-setup.png")
    dialog.close()


def bottoms(window, *buttons) -> list[int]:
    """Where each button ends, in the main window: under 768 means on the screen."""
    return [b.mapTo(window, b.rect().bottomRight()).y() for b in buttons if b.isVisible()]


def variations(dock, gen, layer) -> None:
    """Three variations in one job (a fake engine reusing the real result), Start from layers
    open with the Landsat layer ticked."""
    from fake_service import FakeService
    from osgeo import gdal

    real = report["status"].removeprefix("done: ")
    orders = {1: [1, 2, 3], 2: [3, 2, 1], 3: [2, 3, 1]}

    def make_file(job, index, path):
        gdal.Translate(str(path), real, bandList=orders[index])

    # The files are the demo-weight result's: named as pipeline checks, as the real would be.
    service = FakeService(WORK / "fake-staging", scores={1: 0.58, 2: 0.71, 3: 0.64},
                          make_file=make_file, tags={
                              "TEXT2EARTH_PIPELINE_CHECK": "yes: random demo weights"}
                          ).__enter__()
    settings = dock.manager.settings
    local = (settings.url, settings.python)
    settings.url = service.url
    dock.manager.stop()
    gen.variations_spin.setValue(3)
    gen.start_layers.box.setCollapsed(False)
    gen.generate_button.click()
    wait(lambda: gen.task is None)
    gen.start_layers.box.setChecked(True)
    gen.start_layers.tick([layer.id()])
    gen.scroll.ensureWidgetVisible(gen.start_layers.box)
    report["variations_status"] = gen.status_label.text()
    report["strip"] = [item.text() for item in gen.strip.items()]
    grab(DOCS / "screenshot-variations.png")
    gen.start_layers.box.setChecked(False)
    gen.start_layers.box.setCollapsed(True)
    gen.variations_spin.setValue(1)
    settings.url, settings.python = local
    service.__exit__()


QTimer.singleShot(2000, main)
