"""The dock on a 1366 x 768 laptop screen, in a headless QGIS with a mocked iface whose main
window carries a menu bar, two toolbars and a status bar as QGIS's does; no engine installed
(as after a zip install). Also the up-front size checks, the extent outline's life and the
default output folder. Run by tests/test_plugin_layout.py; prints one JSON object last.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QPoint, QRect
from qgis.PyQt.QtWidgets import QStatusBar, QToolBar
from qgis_harness import iface, phase, pump, report, show_main_window, slot_errors

import text2earth_qgis
import text2earth_qgis.core.service.engine_manager as engine_manager
from text2earth_qgis.core.job_spec import LEVEL

SCREEN = (1366, 768)
RASTER = os.environ["T2E_RASTER"]  # a real georeferenced GeoTIFF
UTM = QgsCoordinateReferenceSystem("EPSG:32632")

# As after a zip install on a machine without the engine: nothing to find.
engine_manager.find_engine_python = lambda configured=None: None

window, canvas = show_main_window()
canvas.setMinimumSize(200, 200)
canvas.setMaximumSize(16777215, 16777215)
window.menuBar().addMenu("Project")
for name in ("File", "Digitizing"):
    bar = QToolBar(name)
    for text in ("New", "Open", "Save", "Zoom", "Pan", "Identify", "Select"):
        bar.addAction(text)
    window.addToolBar(bar)
window.setStatusBar(QStatusBar())
window.resize(*SCREEN)
pump(0.2)
plugin = text2earth_qgis.classFactory(iface)
plugin.manager.settings.url = None
plugin.manager.settings.python = None


def inside_window(widget) -> dict:
    top_left = widget.mapTo(window, QPoint(0, 0))
    rect = QRect(top_left, widget.size())
    return {"text": widget.text() if hasattr(widget, "text") else type(widget).__name__,
            "rect": [rect.x(), rect.y(), rect.width(), rect.height()],
            "visible": widget.isVisible(),
            "inside": window.rect().contains(rect)}


def in_viewport(widget, scroll) -> bool:
    """Shown in the scroll area's visible part without scrolling."""
    viewport = scroll.viewport()
    top_left = widget.mapTo(viewport, QPoint(0, 0))
    return viewport.rect().contains(QRect(top_left, widget.size()))


@phase("first_run")
def first_run(section):
    plugin.initGui()
    plugin.toggle_action.trigger()
    dock = plugin.dock
    pump(0.2)
    ok = wait_engine(dock)
    section["engine_done"] = ok
    section["state"] = plugin.manager.state
    section["label"] = dock.engine_bar.label.text()
    section["action"] = dock.engine_bar.action_button.text()
    section["action_enabled"] = dock.engine_bar.action_button.isEnabled()
    section["action_inside"] = inside_window(dock.engine_bar.action_button)
    section["messages"] = [item.text() for item in iface.messageBar().items()]
    opened = []
    plugin.open_engine_setup = lambda: opened.append("setup")
    dock.setup_requested.disconnect()
    dock.setup_requested.connect(plugin.open_engine_setup)
    dock.engine_bar.action_button.click()
    section["click_opens"] = opened


def wait_engine(dock):
    from probe_support import wait_for

    return wait_for(lambda: dock.engine_task is None, 30)


@phase("generate_tab")
def generate_tab(section):
    dock = plugin.dock
    gen = dock.generate
    QgsProject.instance().setCrs(UTM)
    canvas.setDestinationCrs(UTM)
    canvas.setExtent(QgsRectangle(447000, 5411000, 448000, 5411700))
    pump(0.1)
    gen.canvas_button.click()  # an extent is chosen
    pump(0.3)
    section["window"] = [window.width(), window.height()]
    section["dock_min"] = [dock.minimumSizeHint().width(), dock.minimumSizeHint().height()]
    section["dock"] = [dock.width(), dock.height()]
    section["buttons"] = [inside_window(b) for b in (gen.generate_button, gen.cancel_button)]
    section["progress"] = inside_window(gen.progress)
    section["preview"] = inside_window(gen.run_view.preview_label)
    section["essential_in_view"] = {
        name: in_viewport(widget, gen.scroll) for name, widget in (
            ("prompt", gen.prompt_edit), ("draw", gen.draw_button),
            ("canvas", gen.canvas_button), ("mode", gen.mode_combo))}
    section["advanced_collapsed"] = gen.advanced_box.isCollapsed()
    section["start_layers_collapsed"] = gen.start_layers.box.isCollapsed()
    section["horizontal_scroll"] = gen.scroll.horizontalScrollBar().isVisible()
    section["band_fill_alpha"] = gen.band.fillColor().alpha()
    section["band_vertices_after_choice"] = gen.band.numberOfVertices()
    # A long text stays on one line (elided), and says all of itself as text().
    long = "failed: " + "the engine said something very long about this run " * 5
    gen.status_label.setText(long)
    pump(0.05)
    section["long_status"] = {"text_kept": gen.status_label.text() == long,
                              "height": gen.status_label.height(),
                              "line": gen.status_label.fontMetrics().height()}
    gen.status_label.setText("")


@phase("edit_tab")
def edit_tab(section):
    dock = plugin.dock
    layer = QgsRasterLayer(RASTER, "ortho", "gdal")
    QgsProject.instance().addMapLayer(layer)
    dock.tabs.setCurrentWidget(dock.edit_panel)
    panel = dock.edit_panel
    panel.raster_combo.setLayer(layer)
    pump(0.3)
    section["window"] = [window.width(), window.height()]
    section["buttons"] = [inside_window(b) for b in (panel.run_button, panel.cancel_button)]
    section["scale_label"] = panel.scale_label.text()
    section["layer_crs"] = layer.crs().authid()
    section["layer_px"] = [layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()]
    centre = layer.extent().center()
    section["layer_centre"] = [centre.x(), centre.y()]
    section["band_vertices_on_edit_tab"] = dock.generate.band.numberOfVertices()
    dock.tabs.setCurrentWidget(dock.generate)
    pump(0.05)
    section["band_vertices_back"] = dock.generate.band.numberOfVertices()


@phase("advanced_remembered")
def advanced_remembered(section):
    gen = plugin.dock.generate
    gen.advanced_box.setCollapsed(False)
    gen.start_layers.box.setCollapsed(False)
    pump(0.05)
    plugin.unload()
    pump(0.1)
    plugin.initGui()
    plugin.toggle_action.trigger()
    pump(0.2)
    wait_engine(plugin.dock)
    section["open_after_reload"] = not plugin.dock.generate.advanced_box.isCollapsed()
    section["start_layers_open_after_reload"] = \
        not plugin.dock.generate.start_layers.box.isCollapsed()
    section["start_layers_active_after_reload"] = plugin.dock.generate.start_layers.active
    plugin.dock.generate.advanced_box.setCollapsed(True)
    plugin.dock.generate.start_layers.box.setCollapsed(True)


@phase("variations_fit")
def variations_fit(section):
    """After a run of three variations: the strip, Generate and Cancel all on the screen,
    the essential path still in view; and with "Start from layers" opened too."""
    from text2earth_qgis.core.candidates import Candidate

    dock = plugin.dock
    gen = dock.generate
    dock.tabs.setCurrentWidget(gen)
    layers = [QgsRasterLayer(RASTER, f"variation {k}", "gdal") for k in (1, 2, 3)]
    QgsProject.instance().addMapLayers(layers)
    gen.strip.show_variations([
        (layer, Candidate(k, 10 * k, 0.9 - 0.1 * k, RASTER), RASTER)
        for k, layer in enumerate(layers, start=1)])
    pump(0.3)
    section["window"] = [window.width(), window.height()]
    section["widgets"] = [inside_window(w) for w in (
        gen.strip.thumbs, gen.strip.remove_button, gen.strip.delete_check,
        gen.strip.hide_button, gen.generate_button, gen.cancel_button, gen.progress)]
    section["essential_in_view"] = {
        name: in_viewport(widget, gen.scroll) for name, widget in (
            ("prompt", gen.prompt_edit), ("draw", gen.draw_button),
            ("canvas", gen.canvas_button), ("mode", gen.mode_combo))}
    section["heights"] = {"strip": gen.strip.height(), "viewport": gen.scroll.viewport().height(),
                          "run_view": gen.run_view.height(),
                          "mode_bottom": gen.mode_combo.mapTo(gen.scroll.viewport(), QPoint(
                              0, gen.mode_combo.height())).y()}
    strip_rect = gen.strip.thumbs.viewport().rect()
    section["thumbs_shown"] = [
        strip_rect.contains(gen.strip.thumbs.visualItemRect(item))
        for item in gen.strip.items()]
    section["strip_horizontal_scroll"] = gen.strip.thumbs.horizontalScrollBar().isVisible()
    gen.start_layers.box.setCollapsed(False)
    pump(0.2)
    section["with_start_layers"] = [inside_window(w) for w in (
        gen.generate_button, gen.cancel_button, gen.strip.remove_button)]
    section["start_layers_horizontal_scroll"] = gen.scroll.horizontalScrollBar().isVisible()
    gen.start_layers.box.setCollapsed(True)
    gen.strip.clear()
    QgsProject.instance().removeMapLayers([layer.id() for layer in layers])
    pump(0.05)


@phase("size_checks")
def size_checks(section):
    gen = plugin.dock.generate
    gen.mode_combo.setCurrentIndex(gen.mode_combo.findData(LEVEL))
    cases = {
        "drag_2px": ("EPSG:32632", [447000.0, 5411000.0, 447002.0, 5411002.0], 17),
        "country": ("EPSG:32632", [300000.0, 5000000.0, 800000.0, 5500000.0], 18),
        "utm_block": ("EPSG:32632", [447000.0, 5411000.0, 447600.0, 5411400.0], 17),
        "mercator": ("EPSG:3857", [944000.0, 6240000.0, 946500.0, 6241800.0], 16),
        "geographic": ("EPSG:4326", [8.27, 48.85, 8.31, 48.87], 15),
        "big_utm": ("EPSG:32632", [440000.0, 5400000.0, 470000.0, 5430000.0], 15),
    }
    rows = {}
    for name, (authid, bbox, level) in cases.items():
        gen.level_spin.setValue(level)
        gen.set_extent(QgsRectangle(*bbox), QgsCoordinateReferenceSystem(authid))
        pump(0.02)
        rows[name] = {"authid": authid, "bbox": bbox, "level": level,
                      "planned": list(getattr(gen, "planned", [])),
                      "generate_enabled": gen.generate_button.isEnabled(),
                      "tooltip": gen.generate_button.toolTip(),
                      "status": gen.status_label.text(), "info": gen.info_label.text()}
        gen.planned = []
    section["rows"] = rows


@phase("outline_and_folder")
def outline_and_folder(section):
    gen = plugin.dock.generate
    gen.set_extent(QgsRectangle(447000, 5411000, 447600, 5411400), UTM)
    section["vertices_set"] = gen.band.numberOfVertices()
    gen.clear_extent_button.click()
    section["vertices_cleared"] = gen.band.numberOfVertices()
    section["extent_cleared"] = gen.extent is None
    gen.folder_widget.setFilePath("")
    section["project_home"] = QgsProject.instance().homePath()
    section["default_folder"] = str(gen.output_folder())
    section["temp"] = tempfile.gettempdir()


for step in (first_run, generate_tab, edit_tab, advanced_remembered, variations_fit,
             size_checks, outline_and_folder):
    step()
plugin.unload()
report["slot_errors"] = slot_errors
report["heavy"] = sorted(m for m in ("rasterio", "torch") if m in sys.modules)
print(json.dumps(report))
