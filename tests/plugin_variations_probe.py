"""The dock's variations, score, examples by level, scene method and "Start from layers", in a
headless QGIS (mocked iface, real canvas) against tests/fake_service.py: a loopback service
answering as the contracts say (candidates best first, scores, /file?candidate=K), whose
candidate files are real GeoTIFFs written here with QGIS's GDAL. Run by
tests/test_plugin_start_layers.py; prints one JSON object last. Never imports rasterio.

Inputs in the environment: T2E_WORK (an empty folder).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from fake_service import FakeService
from osgeo import gdal, osr
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFillSymbol,
    QgsGeometry,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRectangle,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QColor
from qgis_harness import iface, phase, pump, report, show_main_window, slot_errors, wait_for

import text2earth_qgis
from text2earth_qgis.core.job_spec import LEVEL

WORK = Path(os.environ["T2E_WORK"])
OUT = WORK / "out"
UTM = QgsCoordinateReferenceSystem("EPSG:32632")
BBOX = [447000.0, 5411000.0, 447300.0, 5411250.0]
COLOURS = {1: (200, 60, 60), 2: (60, 200, 60), 3: (60, 60, 200)}
# The styled layers to start from: a red square in the extent's CRS, a blue one in lon/lat.
RED_UTM = (447040.0, 5411060.0, 447120.0, 5411140.0)
BLUE_LONLAT = (8.2803, 48.8512, 8.2810, 48.8517)


def write_candidate(job: dict, index: int, path: Path) -> None:
    """A small real GeoTIFF over the job's extent, one colour per candidate."""
    xmin, ymin, xmax, ymax = job["bbox"]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 60, 50, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((xmin, (xmax - xmin) / 60, 0, ymax, 0, -(ymax - ymin) / 50))
    srs = osr.SpatialReference()
    srs.SetFromUserInput(job["crs"])
    ds.SetProjection(srs.ExportToWkt())
    for band, value in enumerate(COLOURS[index], start=1):
        ds.GetRasterBand(band).Fill(value)
    ds = None


window, canvas = show_main_window()
service = FakeService(WORK / "staging", scores={1: 0.41, 2: 0.87, 3: 0.63},
                      make_file=write_candidate).__enter__()
plugin = text2earth_qgis.classFactory(iface)
settings = plugin.manager.settings
settings.url = service.url
settings.token_file = str(WORK / "token")
plugin.initGui()
plugin.toggle_action.trigger()
dock = plugin.dock
gen = dock.generate
wait_for(lambda: dock.engine_task is None, 30)
QgsProject.instance().setCrs(UTM)
canvas.setDestinationCrs(UTM)
canvas.setExtent(QgsRectangle(446900, 5410900, 447400, 5411350))
pump(0.1)


def fill(prompt: str, seed: int, level: int = 16, count: int = 1) -> None:
    gen.prompt_edit.setPlainText(prompt)
    gen.seed_lock_check.setChecked(True)
    gen.seed_spin.setValue(seed)
    gen.steps_spin.setValue(2)
    gen.mode_combo.setCurrentIndex(gen.mode_combo.findData(LEVEL))
    gen.level_spin.setValue(level)
    gen.variations_spin.setValue(count)
    gen.folder_widget.setFilePath(str(OUT))
    gen.set_extent(QgsRectangle(*BBOX), UTM)
    pump(0.05)


def run() -> dict:
    before = set(QgsProject.instance().mapLayers())
    jobs = len(service.jobs)
    gen.generate_button.click()
    started = gen.task is not None
    finished = wait_for(lambda: gen.task is None, 60)
    pump(0.1)
    layers = QgsProject.instance().mapLayers()
    return {"started": started, "finished": finished,
            "sent": service.jobs[jobs:],
            "status": gen.status_label.text(),
            "messages": [item.text() for item in iface.messageBar().items()],
            "new_layers": [{"id": lid, "name": layers[lid].name(),
                            "source": layers[lid].source(),
                            "abstract": layers[lid].metadata().abstract(),
                            "job": json.loads(layers[lid].customProperty("text2earth/job"))}
                           for lid in layers if lid not in before],
            "history": [dock.history_panel.history_list.item(i).text()
                        for i in range(dock.history_panel.history_list.count())]}


def group_order() -> list[str]:
    group = QgsProject.instance().layerTreeRoot().findGroup("Text2Earth")
    return [node.layer().source() for node in group.findLayers()] if group else []


@phase("variations")
def variations(section):
    fill("a village among fields", 100, count=3)
    section.update(run())
    strip = gen.strip
    section["strip_visible"] = strip.isVisible()
    section["strip"] = [{"text": item.text(), "tooltip": item.toolTip(),
                         "layer": item.data(Qt.ItemDataRole.UserRole),
                         "checked": item.checkState() == Qt.CheckState.Checked,
                         "icon": not item.icon().isNull()} for item in strip.items()]
    section["group_order"] = group_order()
    section["history_thumbs"] = [len(entry.thumbnail_png_b64)
                                 for entry in dock.history_panel.history]
    section["history_thumb_pngs"] = len({entry.thumbnail_png_b64
                                         for entry in dock.history_panel.history})
    section["compare_layer"] = gen.run_view.result_layer_id
    # Untick the last: Remove unticked takes its layer off the map; its file stays.
    items = strip.items()
    items[2].setCheckState(Qt.CheckState.Unchecked)
    strip.remove_button.click()
    section["first_removal"] = {"removed": strip.removed, "deleted": strip.deleted,
                                "layers_left": sorted(QgsProject.instance().mapLayers()),
                                "strip_count": strip.thumbs.count(),
                                "strip_visible": strip.isVisible()}
    # Untick the second and ask for its file to go too.
    strip.items()[1].setCheckState(Qt.CheckState.Unchecked)
    strip.delete_check.setChecked(True)
    strip.remove_button.click()
    section["second_removal"] = {"removed": strip.removed, "deleted": strip.deleted,
                                 "layers_left": sorted(QgsProject.instance().mapLayers()),
                                 "strip_visible": strip.isVisible()}
    section["files"] = sorted(p.name for p in OUT.iterdir())


@phase("single")
def single(section):
    service.scores = {1: 0.7}
    fill("a single farm", 7, count=1)
    section.update(run())
    section["strip_visible"] = gen.strip.isVisible()
    service.scores = {1: 0.41, 2: 0.87, 3: 0.63}


@phase("unscored_and_older")
def unscored_and_older(section):
    """An engine without Git-RSCLIP (no scores: generation order, no score shown), then one
    older than the plugin (it refuses the new fields)."""
    service.scores = None
    fill("two unscored farms", 5, count=2)
    section["unscored"] = run()
    section["unscored_strip"] = [{"text": item.text(), "tooltip": item.toolTip()}
                                 for item in gen.strip.items()]
    gen.strip.clear()
    service.older = True
    fill("an older engine", 6, count=3)
    section["older"] = run()
    section["older_status"] = gen.status_label.text()
    service.older = False
    service.scores = {1: 0.41, 2: 0.87, 3: 0.63}


@phase("scene_method")
def scene_method(section):
    section["choices"] = [gen.scene_combo.itemData(i) for i in range(gen.scene_combo.count())]
    fill("a whole town, coarse to fine", 9)
    gen.scene_combo.setCurrentIndex(gen.scene_combo.findData("cascade"))
    section.update(run())
    gen.scene_combo.setCurrentIndex(0)
    dock.load_job(section["sent"][0])
    section["reloaded"] = gen.scene_combo.currentData()
    gen.scene_combo.setCurrentIndex(0)


@phase("examples")
def examples(section):
    rows = {}
    for level in (17, 12):
        gen.level_spin.setValue(level)
        pump(0.02)
        rows[str(level)] = [gen.examples.itemText(i) for i in range(1, gen.examples.count())]
    section["rows"] = rows
    gen.examples.setCurrentIndex(1)
    gen.examples.activated.emit(1)
    section["picked"] = gen.prompt_edit.toPlainText()


def square_layer(name: str, crs: str, box, colour) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"Polygon?crs={crs}", name, "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(*box)))
    layer.dataProvider().addFeatures([feature])
    symbol = QgsFillSymbol.createSimple({"color": ",".join(map(str, colour)) + ",255",
                                         "outline_style": "no"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    return layer


@phase("start_layers")
def start_layers(section):
    red = square_layer("land use (red)", "EPSG:32632", RED_UTM, (255, 0, 0))
    blue = square_layer("lake (blue, lon/lat)", "EPSG:4326", BLUE_LONLAT, (0, 0, 255))
    hidden = square_layer("hidden layer", "EPSG:32632", RED_UTM, (0, 255, 0))
    project = QgsProject.instance()
    project.addMapLayers([red, blue, hidden])
    project.layerTreeRoot().findLayer(hidden.id()).setItemVisibilityChecked(False)
    pump(0.05)
    box = gen.start_layers
    section["collapsed_at_first"] = box.box.isCollapsed()
    section["active_at_first"] = box.active
    section["listed"] = [box.layer_list.item(i).text() for i in range(box.layer_list.count())]
    section["default_strength"] = box.strength
    box.box.setCollapsed(False)
    box.box.setChecked(True)
    fill("farmland with a lake", 31, level=17)
    # Nothing ticked: refused before anything is drawn or sent.
    section["nothing_ticked"] = run()
    box.tick([red.id(), blue.id()])
    box.set_strength(0.35)
    # An engine that cannot start from layers refuses the job: the drawn picture goes too.
    service.older = True
    refused = run()
    service.older = False
    section["refused_by_older"] = {
        "sent_init": [job.get("init_raster") for job in refused["sent"]],
        "start_files_after": sorted(p.name for p in OUT.glob("*.start*"))}
    section.update(run())
    sent = section["sent"][0] if section["sent"] else {}
    init = sent.get("init_raster")
    section["planned"] = list(gen.planned)
    if init:
        ds = gdal.Open(init)
        section["gdal"] = {"geotransform": list(ds.GetGeoTransform()),
                           "size": [ds.RasterXSize, ds.RasterYSize],
                           "bands": ds.RasterCount,
                           "epsg": osr.SpatialReference(ds.GetProjection())
                           .GetAuthorityCode(None)}
        ds = None
        # QGIS's own rendering of the same extent at the same size, set up here.
        width, height = section["gdal"]["size"]
        settings = QgsMapSettings()
        settings.setLayers([red, blue])
        settings.setDestinationCrs(UTM)
        settings.setOutputSize(QSize(width, height))
        settings.setOutputDpi(96)
        settings.setExtent(QgsRectangle(*BBOX))
        settings.setBackgroundColor(QColor(255, 255, 255))
        job = QgsMapRendererSequentialJob(settings)
        job.start()
        job.waitForFinished()
        reference = WORK / "reference.png"
        section["reference_saved"] = job.renderedImage().save(str(reference))
        section["reference"] = str(reference)
        drawn = settings.visibleExtent()
        section["reference_extent"] = [drawn.xMinimum(), drawn.yMinimum(), drawn.xMaximum(),
                                       drawn.yMaximum()]
    box.box.setChecked(False)
    box.box.setCollapsed(True)


for step in (variations, single, unscored_and_older, scene_method, examples,
             start_layers):
    step()
plugin.unload()
service.__exit__()
report["slot_errors"] = slot_errors
report["heavy"] = sorted(m for m in ("rasterio", "torch") if m in sys.modules)
print(json.dumps(report))
