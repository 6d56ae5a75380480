"""The door, as a new user walks through it: run by the real QGIS desktop (``qgis --code``)
under a virtual X server, in a fresh profile. The zip that `make package` builds is installed
by QGIS's own Plugin Manager code ("Install from ZIP": pyplugin_installer's
installFromZipFile, which unzips, enables and starts it).

Nothing of this checkout is imported: the plugin is the one QGIS loaded from the profile, and
the engine is what its own "Set up engine…" installs, with the dialog's defaults, into the
profile's empty data folder. Then the plugin's button opens the dock, which starts that
engine; an extent is dragged on the map canvas with the mouse, a prompt typed, Generate
clicked, and the layer that arrives is reported.

Inputs (environment): T2E_DOOR_ZIP (the plugin zip), T2E_DOOR_REPORT (the JSON report to
write), T2E_DOOR_SHOTS (a folder for screenshots), T2E_DOOR_SETUP_S (how long the set-up may
take). The test judges the report.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QPoint, Qt, QTimer
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication, QPushButton
from qgis.utils import iface, plugins

ZIP = os.environ["T2E_DOOR_ZIP"]
# The probes' one wait (tests/ only: nothing of the plugin or the engine is taken from here).
sys.path.insert(0, os.environ["T2E_DOOR_TESTS"])
from probe_support import wait_for  # noqa: E402

REPORT = Path(os.environ["T2E_DOOR_REPORT"])
SHOTS = Path(os.environ["T2E_DOOR_SHOTS"])
SETUP_S = float(os.environ.get("T2E_DOOR_SETUP_S", "1200"))
report: dict = {"phases": []}



def grab(name: str) -> None:
    wait_for(lambda: False, 0.5)
    shot = QApplication.primaryScreen().grabWindow(0)
    shot.save(str(SHOTS / name))
    report.setdefault("shots", []).append(name)


def button(widget, text: str) -> QPushButton:
    return next(b for b in widget.findChildren(QPushButton) if b.text() == text)


def message_bar_texts() -> list[str]:
    bar = iface.messageBar()
    return [f"{item.title()} {item.text()}".strip() for item in bar.items()]


def set_up_engine(plugin) -> None:
    """Raster > Text2Earth > Set up engine…, then its one button, the defaults untouched."""
    action = next(a for a in plugin.menu_actions if a.text() == "Set up engine…")
    action.trigger()
    dialog = plugin.dialogs["setup"]
    report["setup_dialog_visible"] = dialog.isVisible()
    # What it will download and install, said before anything starts (worked out in a task).
    report["setup_summary_ready"] = wait_for(lambda: dialog.plan_task is None, 60)
    report["setup_summary"] = dialog.summary_label.text()
    report["setup_advanced_collapsed"] = dialog.advanced.isCollapsed()
    wait_for(lambda: False, 0.5)
    grab("door-setup-before.png")
    started = time.monotonic()
    dialog.start_button.click()
    report["setup_started"] = dialog.task is not None
    report["setup_finished"] = wait_for(lambda: dialog.task is None, SETUP_S)
    report["setup_seconds"] = round(time.monotonic() - started, 1)
    report["setup_status"] = dialog.status_label.text()
    report["setup_log_tail"] = dialog.log_view.toPlainText().splitlines()[-15:]
    grab("door-setup-done.png")
    dialog.close()


def drag_extent(dock) -> None:
    """The Draw button, then a drag across the middle of the map canvas, as with a mouse."""
    canvas = iface.mapCanvas()
    gen = dock.generate
    gen.draw_button.click()
    viewport = canvas.viewport()
    centre = viewport.rect().center()
    start, end = centre - QPoint(60, 40), centre + QPoint(60, 40)
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for step in range(1, 11):
        QTest.mouseMove(viewport, start + (end - start) * step / 10)
        wait_for(lambda: False, 0.02)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    wait_for(lambda: False, 0.3)
    extent = gen.extent
    report["drawn_extent"] = None if extent is None else [
        extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()]
    report["drawn_crs"] = gen.extent_crs.authid() if gen.extent is not None else ""


def generate(plugin) -> None:
    plugin.toggle_action.trigger()  # the toolbar button a user clicks
    dock = plugin.dock
    report["engine_connected"] = wait_for(
        lambda: dock.engine_task is None and plugin.manager.state == "connected", 300)
    report["engine_line"] = dock.engine_bar.label.text()
    report["engine_python"] = plugin.manager.settings.python
    drag_extent(dock)
    gen = dock.generate
    gen.prompt_edit.setPlainText("dense residential area with tree-lined streets and a park")
    report["generate_enabled"] = gen.generate_button.isEnabled()
    report["shown_level"] = gen.level_spin.value()  # what the dock shows it will use
    report["shown_info"] = gen.info_label.text()
    before = set(QgsProject.instance().mapLayers())
    gen.generate_button.click()
    report["generate_finished"] = wait_for(lambda: gen.task is None, 600)
    report["generate_status"] = gen.status_label.text()
    added = [QgsProject.instance().mapLayer(i) for i in set(QgsProject.instance().mapLayers())
             - before]
    report["layers"] = [{
        "name": layer.name(), "source": layer.source(), "valid": layer.isValid(),
        "crs": layer.crs().authid(), "extent": [layer.extent().xMinimum(),
                                                layer.extent().yMinimum(),
                                                layer.extent().xMaximum(),
                                                layer.extent().yMaximum()],
        "width": layer.width(), "height": layer.height(),
    } for layer in added if isinstance(layer, QgsRasterLayer)]
    grab("door-result.png")


def main() -> None:
    try:
        window = iface.mainWindow()
        window.setGeometry(0, 0, 1366, 768)
        window.showMaximized()
        import pyplugin_installer

        report["loaded_before_install"] = "text2earth_qgis" in plugins
        pyplugin_installer.instance().installFromZipFile(ZIP)
        wait_for(lambda: False, 1.0)
        plugin = plugins.get("text2earth_qgis")
        report["plugin_file"] = getattr(__import__("text2earth_qgis"), "__file__", "")
        if plugin is None:
            raise RuntimeError("QGIS did not load text2earth_qgis from the profile")
        # A map a user might have open: Karlsruhe in UTM 32N, a few hundred metres across.
        crs = QgsCoordinateReferenceSystem("EPSG:32632")
        QgsProject.instance().setCrs(crs)
        iface.mapCanvas().setDestinationCrs(crs)
        iface.mapCanvas().setExtent(QgsRectangle(446700, 5410800, 447900, 5411600))
        iface.mapCanvas().refresh()
        set_up_engine(plugin)
        report["phases"].append("setup")
        if report["setup_finished"]:
            generate(plugin)
            report["phases"].append("generate")
        report["message_bar"] = message_bar_texts()
        plugin.unload()
        report["phases"].append("unload")
    except Exception:  # noqa: BLE001 - reported to the test, which fails on it
        report["error"] = traceback.format_exc()
    REPORT.write_text(json.dumps(report, indent=1))
    QgsApplication.instance().processEvents()
    os._exit(0)  # no "save the project?" question from QGIS's own exit


QTimer.singleShot(3000, main)
