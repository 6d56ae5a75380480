"""Drive the dock's "Edit raster" tab in a headless QGIS (mocked iface, real canvas).

Run by tests/test_plugin_edit.py with ``sys.executable``; never imports rasterio or pyproj
(QGIS's GDAL and PROJ stay alone in this process). Environment: T2E_RASTER (the source
raster), T2E_WORK (an empty folder), T2E_PHASES ("ui" and/or "e2e", comma separated); for
e2e also T2E_MODEL and T2E_INPAINT_MODEL (tiny checkpoints). Prints one JSON object on its
last line: raw observations per phase, judged by the test against pyproj and rasterio.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from unittest import mock

from qgis.core import (
    QgsContrastEnhancement,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsMultiBandColorRenderer,
    QgsPointXY,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QPoint, Qt
from qgis.PyQt.QtGui import QColor, QImage
from qgis.PyQt.QtTest import QTest
from qgis_harness import (
    app,
    iface,
    phase,
    pump,
    report,
    show_main_window,
    slot_errors,
    use_local_engine,
    wait_for,
)

import text2earth_qgis
from text2earth_qgis.core.service.client import EngineError

RASTER = os.environ["T2E_RASTER"]
WORK = Path(os.environ["T2E_WORK"])
PHASES = os.environ.get("T2E_PHASES", "ui").split(",")
OUT = WORK / "out"
MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")


def messages():
    return [item.text() for item in iface.messageBar().items()]


def clear_messages():
    iface.messageBar().clearWidgets()
    return 0


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


window, canvas = show_main_window()
plugin = text2earth_qgis.classFactory(iface)
use_local_engine(plugin.manager.settings, WORK, os.environ.get("T2E_MODEL"))
if "e2e" not in PHASES:
    # No engine for the UI checks: the dock's own connect (on opening) fails at once, and
    # so would any job this probe started by mistake.
    plugin.manager.ensure_running = mock.Mock(side_effect=EngineError("no engine here"))
plugin.initGui()
plugin.toggle_action.setChecked(True)  # opens the dock, which connects to the engine
dock = plugin.dock
connected = wait_for(lambda: dock.engine_task is None, 180)
panel = dock.edit_panel
dock.generate.folder_widget.setFilePath(str(OUT))
dock.tabs.setCurrentWidget(panel)
project = QgsProject.instance()


def styled_source(name, path=RASTER):
    """The source raster in a group between two other layers, with a non-default style."""
    layer = QgsRasterLayer(path, name, "gdal")
    renderer = QgsMultiBandColorRenderer(layer.dataProvider(), 3, 2, 1)
    for band, setter, (low, high) in ((3, renderer.setRedContrastEnhancement, (10, 200)),
                                      (2, renderer.setGreenContrastEnhancement, (20, 180)),
                                      (1, renderer.setBlueContrastEnhancement, (30, 160))):
        enhancement = QgsContrastEnhancement(layer.dataProvider().dataType(band))
        enhancement.setContrastEnhancementAlgorithm(
            QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
        enhancement.setMinimumValue(low)
        enhancement.setMaximumValue(high)
        setter(enhancement)
    renderer.setOpacity(0.6)
    layer.setRenderer(renderer)
    root = project.layerTreeRoot()
    group = root.insertGroup(0, "Imagery")
    above = QgsVectorLayer("Point?crs=EPSG:4326", "above", "memory")
    below = QgsVectorLayer("Point?crs=EPSG:4326", "below", "memory")
    for lay in (above, layer, below):
        project.addMapLayer(lay, False)
        group.addLayer(lay)
    return layer


def style_of(layer):
    renderer = layer.renderer()
    out = {"type": renderer.type(), "opacity": renderer.opacity()}
    if isinstance(renderer, QgsMultiBandColorRenderer):
        out["bands"] = [renderer.redBand(), renderer.greenBand(), renderer.blueBand()]
        out["stretch"] = [[e.minimumValue(), e.maximumValue()] for e in (
            renderer.redContrastEnhancement(), renderer.greenContrastEnhancement(),
            renderer.blueContrastEnhancement())]
    return out


def tree_of(layer):
    node = project.layerTreeRoot().findLayer(layer.id())
    parent = node.parent()
    return {"group": parent.name(), "names": [n.name() for n in parent.children()]}


def click(x, y, button=Qt.MouseButton.LeftButton):
    QTest.mouseClick(canvas.viewport(), button, Qt.KeyboardModifier.NoModifier, QPoint(x, y))
    pump(0.01)


def map_point(x, y):
    point = canvas.getCoordinateTransform().toMapCoordinates(x, y)
    return [point.x(), point.y()]


def draw(points, close="right"):
    """Click the vertices; close with a right click or a double click on the last one."""
    for x, y in points[:-1]:
        click(x, y)
    x, y = points[-1]
    if close == "right":
        click(x, y)
        click(x, y, Qt.MouseButton.RightButton)
    else:
        QTest.mouseDClick(canvas.viewport(), Qt.MouseButton.LeftButton,
                          Qt.KeyboardModifier.NoModifier, QPoint(x, y))
        pump(0.01)
    return [map_point(*p) for p in points]


def show_raster_in(layer, crs):
    canvas.setDestinationCrs(crs)
    to_canvas = QgsCoordinateTransform(layer.crs(), crs, project)
    canvas.setExtent(to_canvas.transformBoundingBox(layer.extent()))
    pump(0.05)


def rings(job):
    return job["mask"]["coordinates"] if job else None


LONLAT_RINGS = [
    [(-77.8, 24.2), (-77.6, 24.2), (-77.6, 24.35), (-77.8, 24.35)],
    [(-77.5, 24.5), (-77.4, 24.5), (-77.45, 24.6)],
]


def lonlat_polygons(name, rings=LONLAT_RINGS):
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", name, "memory")
    features = []
    for ring in rings:
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromPolygonXY([[QgsPointXY(*p) for p in ring]]))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    project.addMapLayer(layer)
    return layer


class ErrorFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.errors = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803 - QGIS's names
        self.errors.append(error)


def run_edit_algorithm(params):
    """(result or None, the errors the algorithm reported)."""
    import processing

    feedback = ErrorFeedback()
    try:
        return processing.run("text2earth:editraster", params, feedback=feedback), []
    except Exception as exc:  # noqa: BLE001 - Processing's 'there were errors', or ours
        return None, [*feedback.errors, str(exc)]


class FakeTask:
    """What GenerateTask holds after a successful job, for the layer part without an engine."""

    def __init__(self, job, path, result):
        self.job, self.path, self.result = job, path, result
        self.was_cancelled, self.error = False, ""


@phase("ui")
def ui(section):
    source = styled_source("source ortho")
    section["source_crs"] = source.crs().authid()
    section["source_style"] = style_of(source)
    show_raster_in(source, MERCATOR)
    panel.raster_combo.setLayer(source)
    panel.prompt_edit.setPlainText("a park with trees")
    panel.seed_spin.setValue(11)
    panel.steps_spin.setValue(3)

    # Nothing drawn yet: a message, no task.
    before = clear_messages()
    panel.run_button.click()
    section["no_mask_messages"] = messages()[before:]
    section["no_mask_task"] = panel.task is not None

    panel.draw_button.setChecked(True)
    section["tool_active"] = canvas.mapTool() is panel.sketch
    first = draw([(300, 200), (420, 210), (430, 320), (310, 330)], close="right")
    second = draw([(500, 250), (580, 260), (540, 340)], close="double")
    section["clicked_map"] = [first, second]
    section["canvas_crs"] = canvas.mapSettings().destinationCrs().authid()
    section["polygons_after_draw"] = len(panel.sketch.polygons)
    section["mask_label"] = panel.mask_label.text()
    # Keys: Backspace drops a vertex, Esc the open ring, then (nothing open) everything.
    click(100, 100)
    click(150, 100)
    click(150, 150)
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_Backspace)
    section["ring_after_backspace"] = len(panel.sketch.ring)
    QTest.keyClick(canvas, Qt.Key.Key_Escape)
    section["ring_after_escape"] = len(panel.sketch.ring)
    section["polygons_after_escape"] = len(panel.sketch.polygons)

    job, destination = panel.build_edit()
    section["job"] = job
    section["destination"] = str(destination)
    section["band_polygons"] = panel.sketch.done_band.size()

    # Selected features of a polygon layer in another CRS (lon/lat) instead of the drawing.
    polygons = lonlat_polygons("fields")
    panel.use_selected_check.setChecked(True)
    panel.mask_layer_combo.setLayer(polygons)
    before = clear_messages()
    panel.run_button.click()
    section["no_selection_messages"] = messages()[before:]
    polygons.selectByIds([f.id() for f in polygons.getFeatures()][:1])
    section["selected_job"] = panel.build_edit()[0]
    section["selected_lonlat"] = [list(p) for p in LONLAT_RINGS[0]]
    panel.use_selected_check.setChecked(False)

    # Extend: the body, the buttons' wiring, and a distance of 0.
    panel.distance_spin.setValue(250.0)
    section["extend_job"], destination = panel.build_extend("east")
    section["extend_destination"] = str(destination)
    asked = []
    real_extend = panel.run_extend
    panel.run_extend = asked.append
    for side in ("north", "south", "east", "west", "all"):
        panel.extend_buttons[side].click()
    panel.run_extend = real_extend
    section["buttons_asked"] = asked
    panel.distance_spin.setValue(0.0)
    before = clear_messages()
    panel.extend_buttons["west"].click()
    section["zero_distance_messages"] = messages()[before:]
    section["zero_distance_task"] = panel.task is not None
    panel.distance_spin.setValue(250.0)

    # A layer that is no local file: an XYZ layer (nothing is fetched to build the job).
    xyz = QgsRasterLayer("type=xyz&url=http://127.0.0.1:9/%7Bz%7D/%7Bx%7D/%7By%7D.png"
                         "&zmax=19&zmin=0", "tiles", "wms")
    project.addMapLayer(xyz)
    panel.raster_combo.setLayer(xyz)
    before = clear_messages()
    panel.run_button.click()
    section["xyz_valid"] = xyz.isValid()
    section["xyz_messages"] = messages()[before:]
    # A raster without a CRS (as QGIS shows a file that has none).
    no_crs = QgsRasterLayer(RASTER, "no crs", "gdal")
    no_crs.setCrs(QgsCoordinateReferenceSystem())
    project.addMapLayer(no_crs)
    panel.raster_combo.setLayer(no_crs)
    clear_messages()
    panel.run_button.click()
    section["no_crs_messages"] = messages()
    panel.raster_combo.setLayer(source)

    # The result part with a FAKE result (a copy of the source): placement and style.
    fake = WORK / "fake_result.tif"
    shutil.copyfile(RASTER, fake)
    panel.source_layer = source
    panel.task = FakeTask(job, str(fake), {"path": str(fake), "seed": 11, "level": 12,
                                           "tags": {"TEXT2EARTH_PROMPT": job["prompt"]}})
    added = []
    dock.layer_added.connect(added.append)
    layers_before = set(project.mapLayers())
    panel.finished(True)
    new = [project.mapLayer(i) for i in set(project.mapLayers()) - layers_before]
    section["new_layers"] = [lay.name() for lay in new]
    if new:
        layer = new[0]
        section["result_tree"] = tree_of(layer)
        section["result_style"] = style_of(layer)
        section["result_source"] = layer.source()
        section["result_abstract"] = layer.metadata().abstract()
        section["result_job"] = json.loads(layer.customProperty("text2earth/job"))
        section["layer_added_signal"] = [lay is layer for lay in added]
    section["source_style_after"] = style_of(source)
    section["status"] = panel.status_label.text()
    section["history"] = [dock.history_panel.history_list.item(i).text()
                          for i in range(dock.history_panel.history_list.count())]
    section["buttons_enabled"] = [panel.run_button.isEnabled(), panel.cancel_button.isEnabled()]

    # Reuse from history routes the edit back to this tab.
    dock.tabs.setCurrentIndex(0)
    panel.prompt_edit.setPlainText("something else")
    dock.history_panel.history_list.setCurrentRow(0)
    dock.history_panel.reuse_button.click()
    section["reused_prompt"] = panel.prompt_edit.toPlainText()
    # The tab read back after the reuse is the run's form, field for field.
    from text2earth_qgis.forms import EditForm
    section["reused_form_is_the_runs"] = panel.form() == EditForm.from_job(job)
    section["reused_tab"] = dock.tabs.currentWidget() is panel

    # Esc with nothing open clears every polygon; another tool unchecks the button.
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_Escape)
    section["polygons_after_clear"] = len(panel.sketch.polygons)
    dock.generate.draw_button.setChecked(True)  # the generate tab's extent tool takes the canvas
    section["draw_checked_after_other_tool"] = panel.draw_button.isChecked()
    dock.generate.draw_button.setChecked(False)


@phase("processing")
def processing_phase(section):
    """The 'Edit raster' algorithm builds the same job (the engine call is recorded)."""
    from processing.core.Processing import Processing

    from text2earth_qgis.processing import edit_algorithm

    Processing.initialize()
    source = QgsRasterLayer(RASTER, "processing source", "gdal")
    project.addMapLayer(source)
    mask = lonlat_polygons("mask for processing")
    mask.selectByIds([f.id() for f in mask.getFeatures()][1:])
    sent = []

    def record(manager, job, destination, feedback, context=None):
        sent.append({"job": job, "destination": destination})
        return destination

    out = str(WORK / "processing.tif")
    params = {"INPUT": source, "PROMPT": "a lake", "SEED": 3, "STEPS": 2, "DILATE": 4,
              "LEVEL": 3, "OUTPUT": out,
              "MASK": QgsProcessingFeatureSourceDefinition(mask.id(), True)}
    with mock.patch.object(edit_algorithm, "run_on_engine", record):
        result, _ = run_edit_algorithm(params)
        section["result"] = result
        section["sent"] = sent
        section["selected_lonlat"] = [list(p) for p in LONLAT_RINGS[1]]
        xyz = QgsRasterLayer("type=xyz&url=http://127.0.0.1:9/%7Bz%7D/%7Bx%7D/%7By%7D.png",
                             "tiles for processing", "wms")
        project.addMapLayer(xyz)
        section["xyz_errors"] = run_edit_algorithm({**params, "INPUT": xyz})[1]
        empty = QgsVectorLayer("Polygon?crs=EPSG:4326", "empty", "memory")
        project.addMapLayer(empty)
        section["empty_errors"] = run_edit_algorithm({**params, "MASK": empty})[1]
        section["png_errors"] = run_edit_algorithm(
            {**params, "OUTPUT": str(WORK / "x.png")})[1]
    section["sent_count"] = len(sent)


@phase("e2e")
def e2e(section):
    source = styled_source("ortho to edit")
    section["source_sha256_before"] = sha256(RASTER)
    show_raster_in(source, MERCATOR)
    panel.sketch.clear()
    panel.raster_combo.setLayer(source)
    panel.use_selected_check.setChecked(False)
    panel.prompt_edit.setPlainText("a green park with trees")
    panel.seed_spin.setValue(5)
    panel.steps_spin.setValue(2)
    panel.model_edit.setText(os.environ["T2E_INPAINT_MODEL"])
    panel.draw_button.setChecked(True)
    section["clicked_map"] = draw([(380, 260), (440, 262), (445, 330), (385, 325)])
    section["source_style"] = style_of(source)
    section["tool_before_run"] = canvas.mapTool() is panel.sketch  # left on while it runs
    section["edit"] = run_and_observe(source, panel.run_button)
    # The run is over: its polygons and the sketch tool leave the map.
    section["polygons_after_run"] = len(panel.sketch.polygons)
    section["tool_after_run"] = canvas.mapTool() is panel.sketch
    section["draw_checked_after_run"] = panel.draw_button.isChecked()
    if section["edit"]["error"]:  # an engine without edit jobs: nothing more to try
        return
    panel.draw_button.setChecked(True)  # a new area for the run to cancel
    draw([(380, 260), (440, 262), (445, 330), (385, 325)])
    panel.draw_button.setChecked(False)
    section["cancel"] = cancel_mid_run(source)
    section["source_sha256_after"] = sha256(RASTER)
    section["source_style_after"] = style_of(source)
    # Extending: a small crop of the same raster (the whole one is four model windows tall).
    small = styled_source("small ortho", os.environ["T2E_SMALL_RASTER"])
    panel.raster_combo.setLayer(small)
    panel.distance_spin.setValue(3000.0)
    section["small_style"] = style_of(small)
    section["extend"] = run_and_observe(small, panel.extend_buttons["east"])
    section["xyz"] = edit_xyz_layer()
    section["processing_xyz"] = processing_xyz_edit()


XYZ_AREA = (8.398, 48.998, 8.406, 49.004)  # lon/lat around the polygon, Karlsruhe
XYZ_POLYGON = [(8.4012, 49.0003), (8.4028, 49.0004), (8.4026, 49.0016), (8.4011, 49.0014)]


def tile_of(lon, lat, z):
    n = 2 ** z
    return (int((lon + 180) / 360 * n),
            int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n))


def xyz_tiles(folder, zooms=(16, 17)):
    """Local XYZ tiles, each one colour from its z/x/y (the test knows the formula)."""
    for z in zooms:
        (x0, y0), (x1, y1) = tile_of(*XYZ_AREA[0::3], z), tile_of(*XYZ_AREA[2:0:-1], z)
        for x in range(min(x0, x1), max(x0, x1) + 1):
            for y in range(min(y0, y1), max(y0, y1) + 1):
                image = QImage(256, 256, QImage.Format.Format_RGB32)
                image.fill(QColor((x * 37) % 256, (y * 59) % 256, 40 + z * 10))
                (folder / str(z) / str(x)).mkdir(parents=True, exist_ok=True)
                image.save(str(folder / str(z) / str(x) / f"{y}.png"))
    return f"type=xyz&url=file://{folder}/%7Bz%7D/%7Bx%7D/%7By%7D.png&zmin=16&zmax=17"


def edit_xyz_layer():
    """An XYZ layer (no file behind it): the polygon's area is rendered at level 17 into a
    GeoTIFF, which is edited."""
    layer = QgsRasterLayer(xyz_tiles(WORK / "tiles"), "local tiles", "wms")
    project.addMapLayer(layer)
    panel.raster_combo.setLayer(layer)
    panel.level_spin.setValue(17)
    mask = lonlat_polygons("xyz mask", [XYZ_POLYGON])
    mask.selectAll()
    panel.mask_layer_combo.setLayer(mask)
    panel.use_selected_check.setChecked(True)
    observed = {"valid": layer.isValid(), "scale_label": panel.scale_label.text()}
    observed.update(run_and_observe(layer, panel.run_button))
    observed["rendered_files"] = sorted(p.name for p in OUT.glob("*_rendered_*"))
    panel.use_selected_check.setChecked(False)
    return observed


def processing_xyz_edit():
    """Processing's "Edit raster" on an XYZ layer, level auto (the tiles' finest, 17): the
    area is rendered next to the output and edited by the real engine."""
    from processing.core.Processing import Processing

    Processing.initialize()
    layer = QgsRasterLayer(xyz_tiles(WORK / "tiles"), "tiles for processing", "wms")
    project.addMapLayer(layer)
    mask = lonlat_polygons("processing xyz mask", [XYZ_POLYGON])
    out = WORK / "processing-out" / "xyz_edited.tif"
    out.parent.mkdir()
    result, errors = run_edit_algorithm({
        "INPUT": layer, "MASK": mask, "PROMPT": "a green park with trees", "SEED": 5,
        "STEPS": 2, "LEVEL": 0, "DILATE": 4, "OUTPUT": str(out),
        "MODEL": os.environ["T2E_INPAINT_MODEL"]})
    return {"valid": layer.isValid(), "result": result, "errors": errors,
            "files": sorted(p.name for p in out.parent.iterdir())}


def cancel_mid_run(source):
    """A long edit, cancelled once the engine runs its steps: no layer, no file."""
    panel.steps_spin.setValue(400)
    files_before = sorted(p.name for p in OUT.iterdir())
    layers_before = set(project.mapLayers())
    clear_messages()
    panel.run_button.click()
    running = wait_for(lambda: re.search(r"running: step [1-9]", panel.status_label.text()), 90)
    observed = {"label_at_cancel": panel.status_label.text(), "saw_running": bool(running),
                "cancel_enabled": panel.cancel_button.isEnabled()}
    panel.cancel_button.click()
    observed["finished"] = wait_for(lambda: panel.task is None, 60)
    pump(1.0)  # anything the engine might still write
    observed.update(status=panel.status_label.text(),
                    messages=[{"text": item.text(), "level": int(item.level())}
                              for item in iface.messageBar().items()],
                    new_layers=sorted(set(project.mapLayers()) - layers_before),
                    files_added=sorted(set(p.name for p in OUT.iterdir()) - set(files_before)),
                    run_enabled=panel.run_button.isEnabled())
    panel.steps_spin.setValue(2)
    return observed


def run_and_observe(source, button, timeout=240.0):
    layers_before = set(project.mapLayers())
    before = clear_messages()
    labels = []
    button.click()
    task = panel.task
    started = task is not None
    end = time.monotonic() + timeout
    while panel.task is not None and time.monotonic() < end:
        app.processEvents()
        text = panel.status_label.text()
        if not labels or labels[-1] != text:
            labels.append(text)
        time.sleep(0.01)
    observed = {"started": started, "finished": panel.task is None, "labels": labels,
                "status": panel.status_label.text(), "messages": messages()[before:],
                "job": task.job if task else None, "error": task.error if task else None}
    new = [project.mapLayer(i) for i in set(project.mapLayers()) - layers_before]
    observed["new_layers"] = [lay.name() for lay in new]
    if new:
        layer = new[0]
        observed.update(path=layer.source(), tree=tree_of(layer), style=style_of(layer),
                        source_tree=tree_of(source))
    return observed


report["engine"] = {"connect_ended": connected, "state": plugin.manager.state}
for name in PHASES:
    {"ui": ui, "processing": processing_phase, "e2e": e2e}[name]()
service = plugin.manager._service
plugin.unload()
report["engine"]["service_ended"] = service is None or service.process.poll() is not None
report["slot_errors"] = slot_errors
report["heavy"] = sorted(m for m in ("rasterio", "torch", "pyproj") if m in sys.modules)
print(json.dumps(report), flush=True)
# QGIS's own teardown at interpreter exit takes ~10 s here and checks nothing of ours.
os._exit(0)
