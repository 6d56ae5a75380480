"""Drive the whole plugin in a headless QGIS (mocked iface, real canvas, real engine service).

Run by tests/test_plugin.py with ``sys.executable``; never imports rasterio (QGIS's GDAL and
rasterio's must not meet in one process). Inputs in the environment:
T2E_MODEL (a tiny checkpoint folder), T2E_WORK (an empty folder for outputs, staging, token).
Prints one JSON object on its last line: raw observations per phase, judged by the test.
Each phase catches its own exceptions, so one failing phase does not hide the others.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsProject,
    QgsRectangle,
)
from qgis.gui import QgsDockWidget, QgsRubberBand
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPoint, Qt
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QPushButton
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
from text2earth_qgis.core.job_spec import AUTO, LEVEL

MODEL = os.environ["T2E_MODEL"]
WORK = Path(os.environ["T2E_WORK"])
OUT = WORK / "out"
STAGING = WORK / "staging"
UTM = QgsCoordinateReferenceSystem("EPSG:32632")
WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")
MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")

def rect(r):
    return [r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum()]


def message_texts():
    bar = iface.messageBar()
    return [{"title": item.title(), "text": item.text(), "level": int(item.level())}
            for item in bar.items()]


def project_layers():
    root = QgsProject.instance().layerTreeRoot()
    out = []
    for layer in QgsProject.instance().mapLayers().values():
        node = root.findLayer(layer.id())
        parent = node.parent() if node is not None else None
        out.append({
            "id": layer.id(),
            "name": layer.name(),
            "source": layer.source(),
            "extent": rect(layer.extent()),
            "authid": layer.crs().authid(),
            "abstract": layer.metadata().abstract(),
            "title": layer.metadata().title(),
            "job": layer.customProperty("text2earth/job"),
            "group": parent.name() if parent is not None and parent is not root else None,
        })
    return out


def files_in(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file()) if folder.exists() else []


window, canvas = show_main_window()
plugin = None


@phase("load")
def load(section):
    global plugin
    registry = QgsApplication.processingRegistry()
    section["provider_before"] = registry.providerById("text2earth") is not None
    plugin = text2earth_qgis.classFactory(iface)
    use_local_engine(plugin.manager.settings, WORK, MODEL)
    plugin.initGui()
    action = plugin.toggle_action
    section["actions"] = [a.text() for a in plugin.actions]
    section["toolbar_added"] = any(c.args == (action,)
                                   for c in iface.addToolBarIcon.call_args_list)
    section["menu_added"] = [c.args[0] for c in iface.addPluginToRasterMenu.call_args_list
                             if c.args[1] is action]
    section["layer_action_added"] = len(iface.addCustomActionForLayerType.call_args_list)
    provider = registry.providerById("text2earth")
    section["provider"] = provider.name() if provider else None
    alg = registry.algorithmById("text2earth:generatescene")
    section["algorithm"] = alg.displayName() if alg else None
    section["algorithm_params"] = [p.name() for p in alg.parameterDefinitions()] if alg else []
    section["dock_before_toggle"] = plugin.dock is not None

    action.trigger()  # the toolbar button: opens the dock (and connects the engine)
    dock = plugin.dock
    section["while_starting"] = {"text": dock.engine_bar.action_button.text(),
                                 "enabled": dock.engine_bar.action_button.isEnabled(),
                                 "task": dock.engine_task is not None}
    pump(0.2)
    section["checked_after_open"] = action.isChecked()
    section["dock_shown"] = dock is not None and dock.isVisible()
    section["dock_area"] = int(window.dockWidgetArea(dock)) if dock else None
    section["right_area"] = int(Qt.DockWidgetArea.RightDockWidgetArea)
    action.trigger()  # closes it
    pump(0.2)
    section["checked_after_close"] = action.isChecked()
    section["dock_hidden_after_close"] = dock.isHidden()
    action.trigger()  # and again, for the rest of the run
    pump(0.2)
    section["same_dock_reopened"] = plugin.dock is dock and dock.isVisible()
    ok = wait_for(lambda: dock.engine_task is None, 120)
    section["engine_connected"] = ok and plugin.manager.client is not None
    section["engine_label"] = dock.engine_bar.label.text()
    section["connect_enabled"] = dock.engine_bar.action_button.isEnabled()


@phase("levels")
def levels(section):
    dock = plugin.dock
    dock.generate.extent = None  # the level follows the canvas centre until an extent is chosen
    dock.generate.mode_combo.setCurrentIndex(dock.generate.mode_combo.findData(AUTO))
    cases = [
        ("EPSG:32632", (448000.0, 5408000.0), [800.0, 3200.0, 12800.0]),
        ("EPSG:3857", (1113195.0, 55660.0), [800.0, 3200.0, 12800.0]),
        ("EPSG:3857", (1113195.0, 8399738.0), [800.0, 3200.0]),  # 60 N: Mercator's 2x
        ("EPSG:4326", (10.0, 60.0), [0.016, 0.064, 0.256]),
    ]
    rows = []
    for authid, (cx, cy), widths in cases:
        canvas.setDestinationCrs(QgsCoordinateReferenceSystem(authid))
        for width in widths:
            canvas.setExtent(QgsRectangle(cx - width / 2, cy - width / 4,
                                          cx + width / 2, cy + width / 4))
            pump(0.05)
            by_signal = {"label": dock.generate.info_label.text(),
                         "level": dock.generate.current_level}
            dock.generate.update_info()
            centre = canvas.extent().center()
            rows.append({
                "authid": authid,
                "width": width,
                "scale": canvas.scale(),
                "mupp": canvas.mapUnitsPerPixel(),
                "dpi": canvas.mapSettings().outputDpi(),
                "centre": [centre.x(), centre.y()],
                "canvas_crs": canvas.mapSettings().destinationCrs().authid(),
                "level": dock.generate.current_level,
                "label": dock.generate.info_label.text(),
                "by_signal": by_signal,
            })
    section["rows"] = rows


@phase("draw")
def draw(section):
    dock = plugin.dock
    canvas.setDestinationCrs(UTM)
    canvas.setExtent(QgsRectangle(447000, 5411000, 447800, 5411600))
    pump(0.05)
    viewport = canvas.viewport()
    section["viewport"] = [viewport.width(), viewport.height()]
    section["output_size"] = [canvas.mapSettings().outputSize().width(),
                              canvas.mapSettings().outputSize().height()]
    section["mupp"] = canvas.mapUnitsPerPixel()
    drags = {"free": ((100, 120), (300, 250), (500, 420), False),
             "square": ((150, 100), (400, 300), (560, 330), True)}
    for name, (start, middle, end, square) in drags.items():
        dock.generate.extent = None
        dock.generate.square_check.setChecked(square)
        dock.generate.draw_button.setChecked(True)
        pump(0.02)
        result = {"tool_active": canvas.mapTool() is dock.generate.tool}
        transform = canvas.getCoordinateTransform()
        p1 = transform.toMapCoordinates(*start)
        p2 = transform.toMapCoordinates(*end)
        result["start_map"] = [p1.x(), p1.y()]
        result["end_map"] = [p2.x(), p2.y()]
        QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                         QPoint(*start))
        QTest.mouseMove(viewport, QPoint(*middle))
        QTest.mouseMove(viewport, QPoint(*end))
        QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton,
                           Qt.KeyboardModifier.NoModifier, QPoint(*end))
        pump(0.05)
        result["extent"] = rect(dock.generate.extent) if dock.generate.extent is not None else None
        result["extent_crs"] = dock.generate.extent_crs.authid()
        result["band"] = rect(dock.generate.band.asGeometry().boundingBox())
        result["tool_after"] = canvas.mapTool() is dock.generate.tool
        result["draw_checked_after"] = dock.generate.draw_button.isChecked()
        result["extent_label"] = dock.generate.extent_label.text()
        section[name] = result
    dock.generate.square_check.setChecked(False)
    canvas.setExtent(QgsRectangle(446000, 5410000, 447600, 5411200))
    pump(0.05)
    dock.generate.canvas_button.click()
    gen = dock.generate
    section["canvas_button"] = {"extent": rect(gen.extent), "canvas": rect(canvas.extent()),
                                "crs": gen.extent_crs.authid()}


def run_generate(dock, timeout=120.0):
    labels = []
    gen = dock.generate
    gen.status_label.setText("")
    gen.generate_button.click()
    started = gen.task is not None
    end = time.monotonic() + timeout
    while gen.task is not None and time.monotonic() < end:
        app.processEvents()
        text = dock.generate.status_label.text()
        if not labels or labels[-1] != text:
            labels.append(text)
        time.sleep(0.01)
    return started, labels


def fill(dock, prompt, seed, level, steps=2):
    dock.generate.prompt_edit.setPlainText(prompt)
    dock.generate.seed_lock_check.setChecked(True)  # this very seed, as a user who typed it
    dock.generate.seed_spin.setValue(seed)
    dock.generate.steps_spin.setValue(steps)
    dock.generate.mode_combo.setCurrentIndex(dock.generate.mode_combo.findData(LEVEL))
    dock.generate.level_spin.setValue(level)
    dock.generate.folder_widget.setFilePath(str(OUT))


@phase("generate")
def generate(section):
    dock = plugin.dock
    cases = [
        ("utm", UTM, [447000.0, 5411000.0, 447300.0, 5411250.0], "a park near the river", 1234),
        ("geo", WGS84, [8.27, 48.85, 8.274, 48.853], "dense green forest, a lake", 4321),
    ]
    for name, crs, bbox, prompt, seed in cases:
        QgsProject.instance().setCrs(crs)
        canvas.setDestinationCrs(crs)
        canvas.setExtent(QgsRectangle(*bbox))
        pump(0.05)
        fill(dock, prompt, seed, 16)
        dock.generate.set_extent(QgsRectangle(*bbox), crs)
        before = set(QgsProject.instance().mapLayers())
        started, labels = run_generate(dock)
        new = [lay for lay in project_layers() if lay["id"] not in before]
        section[name] = {
            "bbox": bbox, "authid": crs.authid(), "prompt": prompt, "seed": seed, "level": 16,
            "started": started, "finished": dock.generate.task is None, "labels": labels,
            "status": dock.generate.status_label.text(), "new_layers": new,
            "files": files_in(OUT), "staging": files_in(STAGING),
            "history": [dock.history_panel.history_list.item(i).text()
                        for i in range(dock.history_panel.history_list.count())],
            "history_paths": [e.path for e in dock.history_panel.history],
            "messages": message_texts(),
            "generate_enabled": dock.generate.generate_button.isEnabled(),
            "cancel_enabled": dock.generate.cancel_button.isEnabled(),
        }
    root = QgsProject.instance().layerTreeRoot()
    group = root.findGroup("Text2Earth")
    section["group_children"] = [n.name() for n in group.children()] if group else None
    section["top_level"] = [n.name() for n in root.children()]
    # 'Zoom to' on the older entry (the list shows the newest first) from a far-away view.
    canvas.setDestinationCrs(UTM)
    canvas.setExtent(QgsRectangle(300000, 5000000, 310000, 5010000))
    pump(0.05)
    dock.history_panel.history_list.setCurrentRow(dock.history_panel.history_list.count() - 1)
    dock.history_panel.zoom_button.click()
    pump(0.05)
    section["zoomed_to"] = rect(canvas.extent())


def form_state(dock):
    return {
        "prompt": dock.generate.prompt_edit.toPlainText(),
        "negative": dock.generate.negative_edit.text(),
        "seed": dock.generate.seed_spin.value(),
        "steps": dock.generate.steps_spin.value(),
        "guidance": dock.generate.guidance_spin.value(),
        "scheduler": dock.generate.scheduler_combo.currentText(),
        "mode": dock.generate.mode_combo.currentData(),
        "level": dock.generate.level_spin.value(),
        "extent": rect(dock.generate.extent) if dock.generate.extent is not None else None,
        "extent_crs": dock.generate.extent_crs.authid(),
    }


def scramble(dock):
    dock.generate.prompt_edit.setPlainText("something else entirely")
    dock.generate.negative_edit.setText("clouds")
    dock.generate.seed_spin.setValue(99)
    dock.generate.steps_spin.setValue(37)
    dock.generate.guidance_spin.setValue(9.5)
    dock.generate.scheduler_combo.setCurrentText("ddim")
    dock.generate.mode_combo.setCurrentIndex(dock.generate.mode_combo.findData(AUTO))
    dock.generate.level_spin.setValue(12)
    dock.generate.set_extent(QgsRectangle(0, 0, 10, 10), MERCATOR)


@phase("variations")
def variations(section):
    """Generate twice with unchanged settings, with the seed free and locked, and N at once."""
    dock = plugin.dock
    gen = dock.generate
    QgsProject.instance().setCrs(UTM)
    canvas.setDestinationCrs(UTM)
    fill(dock, "variations of a village", 2468, 16)
    gen.set_extent(QgsRectangle(447000, 5411000, 447300, 5411250), UTM)
    runs = {}
    # N variations in one job: tests/plugin_variations_probe.py (a service with candidates).
    for name, locked, count in (("free", False, 1), ("free", False, 1), ("locked", True, 1),
                                ("locked", True, 1)):
        gen.seed_lock_check.setChecked(locked)
        gen.variations_spin.setValue(count)
        before = set(QgsProject.instance().mapLayers())
        started, labels = run_generate(dock)
        new = [lay for lay in project_layers() if lay["id"] not in before]
        runs.setdefault(name, []).append({
            "started": started, "status": gen.status_label.text(),
            "labels": labels,
            "layers": [{"name": lay["name"], "source": lay["source"],
                        "seed": json.loads(lay["job"])["seed"]} for lay in new],
            "seed_shown": gen.seed_spin.value(),
            "outline_vertices": gen.band.numberOfVertices(),
            "messages": message_texts()})
    gen.variations_spin.setValue(1)
    section.update(runs)
    # Before / after: the last result hides (what is under it shows) and comes back.
    root = QgsProject.instance().layerTreeRoot()
    view = gen.run_view
    node = root.findLayer(view.result_layer_id)
    compare = {"enabled": view.compare_button.isEnabled(),
               "layer": node.layer().source() if node else None,
               "visible": [node.isVisible()]}
    view.compare_button.click()
    compare["visible"].append(node.isVisible())
    view.compare_button.click()
    compare["visible"].append(node.isVisible())
    section["compare"] = compare
    # Keep some runs: the other two leave the map, their files stay.
    history = dock.history_panel
    history.history_list.clearSelection()
    for row in (1, 2):  # the newest first: the first locked run and the second free one
        history.history_list.item(row).setSelected(True)
    removed_paths = sorted(e.path for e in history.selected_entries())
    section["keep"] = {"removed": history.remove_selected_layers(),
                       "removed_paths": removed_paths,
                       "sources_left": sorted(lay["source"] for lay in project_layers())}


@phase("reuse")
def reuse(section):
    dock = plugin.dock
    utm = report["generate"]["utm"]["new_layers"][0]
    layer = QgsProject.instance().mapLayer(utm["id"])
    job = json.loads(layer.customProperty("text2earth/job"))
    section["job"] = job
    scramble(dock)
    dock.load_job(job)
    section["load_job"] = form_state(dock)
    dock.generate.pattern_edit.setText("{date}_{time}_{prompt}_s{seed}_again.tif")
    section["rebuilt"] = dock.generate.build_job()[0]
    # The layer's context-menu action: 'Regenerate with these settings'.
    scramble(dock)
    iface.activeLayer.return_value = layer
    plugin.regenerate_current()
    section["regenerate"] = form_state(dock)
    section["regenerate_checked"] = plugin.toggle_action.isChecked()
    section["custom_action_for_layer"] = [c.args[1] is layer for c in
                                          iface.addCustomActionForLayer.call_args_list]
    # A job made in 'auto from map scale' mode, at one canvas scale, loaded back at another.
    QgsProject.instance().setCrs(UTM)
    canvas.setDestinationCrs(UTM)
    canvas.setExtent(QgsRectangle(447000, 5411000, 447800, 5411600))
    pump(0.05)
    fill(dock, "a harbour", 555, 16)
    dock.generate.mode_combo.setCurrentIndex(dock.generate.mode_combo.findData(AUTO))
    dock.generate.set_extent(QgsRectangle(447000, 5411000, 447300, 5411300), UTM)
    auto_job = dock.generate.build_job()[0]
    canvas.setExtent(QgsRectangle(440000, 5400000, 452800, 5409600))  # 16x further out
    pump(0.05)
    scramble(dock)
    dock.generate.mode_combo.setCurrentIndex(dock.generate.mode_combo.findData(LEVEL))
    dock.load_job(auto_job)
    section["auto_load_job"] = form_state(dock)
    section["auto_canvas_centre"] = [canvas.extent().center().x(), canvas.extent().center().y()]
    section["auto_job"] = auto_job
    section["auto_rebuilt"] = dock.generate.build_job()[0]
    section["precisions"] = [dock.engine_settings.precision_combo.itemText(i)
                             for i in range(dock.engine_settings.precision_combo.count())]
    dock.engine_settings.precision_combo.setCurrentText("bf16")
    section["bf16_job_precision"] = dock.generate.build_job()[0].get("precision")
    dock.engine_settings.precision_combo.setCurrentText("auto")
    dock.generate.pattern_edit.setText("{date}_{prompt}_s{seed}.tif")


@phase("cancel")
def cancel(section):
    dock = plugin.dock
    QgsProject.instance().setCrs(UTM)
    canvas.setDestinationCrs(UTM)
    fill(dock, "a long job to cancel", 777, 17, steps=400)
    dock.generate.set_extent(QgsRectangle(447000, 5411000, 447300, 5411300), UTM)
    layers_before = set(QgsProject.instance().mapLayers())
    files_before = files_in(OUT)
    messages_before = len(message_texts())
    dock.generate.generate_button.click()
    section["started"] = dock.generate.task is not None
    status = dock.generate.status_label
    running = wait_for(lambda: re.search(r"running: step [1-9]", status.text()), 60)
    section["label_at_cancel"] = dock.generate.status_label.text()
    section["saw_running_step"] = bool(running)
    section["cancel_enabled"] = dock.generate.cancel_button.isEnabled()
    gen = dock.generate
    section["preview_before_cancel"] = bool(wait_for(lambda: gen.run_view.last_preview, 30))
    gen.cancel_button.click()
    after_click = []
    end = time.monotonic() + 60
    while gen.task is not None and time.monotonic() < end:
        app.processEvents()
        if not after_click or after_click[-1] != gen.status_label.text():
            after_click.append(gen.status_label.text())
        time.sleep(0.01)
    section["finished"] = gen.task is None
    section["labels_after_click"] = after_click
    pixmap = gen.run_view.preview_label.pixmap()
    section["preview_after"] = bool(gen.run_view.last_preview) or (
        pixmap is not None and not pixmap.isNull())
    pump(1.0)  # anything the engine might still write
    section["status"] = dock.generate.status_label.text()
    section["new_layers"] = sorted(set(QgsProject.instance().mapLayers()) - layers_before)
    section["files_before"] = files_before
    section["files_after"] = files_in(OUT)
    section["staging_after"] = files_in(STAGING)
    section["new_messages"] = message_texts()[messages_before:]
    iface.messageBar().clearWidgets()  # the bar lists its newest first: start afresh
    client = plugin.manager.client
    section["engine_states"] = [j["state"] for j in client.jobs()] if client else None
    section["generate_enabled"] = dock.generate.generate_button.isEnabled()


@phase("processing")
def processing_phase(section):
    from processing.core.Processing import Processing

    Processing.initialize()
    import processing

    registry = QgsApplication.processingRegistry()
    # initGui registered the provider already; Processing's own start must keep it.
    section["provider_after_init"] = registry.providerById("text2earth") is not None
    out = WORK / "processing" / "scene.tif"
    out.parent.mkdir()
    layers_before = set(QgsProject.instance().mapLayers())
    result = processing.run("text2earth:generatescene", {
        "EXTENT": "447000,447400,5411000,5411250 [EPSG:32632]",
        "PROMPT": "a harbour with boats",
        "LEVEL": 6,  # levels 10..18: index 6 is level 16
        "SEED": 7,
        "STEPS": 2,
        "OUTPUT": str(out),
    })
    section["result"] = {k: str(v) for k, v in result.items()}
    section["requested"] = str(out)
    section["exists"] = out.is_file()
    section["new_layers"] = sorted(set(QgsProject.instance().mapLayers()) - layers_before)
    section["staging_after"] = files_in(STAGING)


@phase("unreachable")
def unreachable(section):
    dock = plugin.dock
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when this block ends: nobody listens there
    service = plugin.manager._service
    plugin.manager.stop()
    section["stop_ended_service"] = service is not None and service.process.poll() is not None
    plugin.manager.settings.url = f"http://127.0.0.1:{port}"
    section["url"] = plugin.manager.settings.url
    fill(dock, "nobody will draw this", 31, 16)
    dock.generate.set_extent(QgsRectangle(447000, 5411000, 447300, 5411300), UTM)
    layers_before = set(QgsProject.instance().mapLayers())
    messages_before = len(message_texts())
    started, labels = run_generate(dock, 60)
    section["started"] = started
    section["finished"] = dock.generate.task is None
    section["status"] = dock.generate.status_label.text()
    section["new_messages"] = message_texts()[messages_before:]
    section["new_layers"] = sorted(set(QgsProject.instance().mapLayers()) - layers_before)
    section["generate_enabled"] = dock.generate.generate_button.isEnabled()
    # Back to a local engine through the dock's own 'Engine settings': URL emptied, Apply.
    dock.engine_settings.url_edit.setText("")
    apply = [b for b in dock.findChildren(QPushButton) if b.text() == "Apply and reconnect"]
    section["apply_buttons"] = len(apply)
    apply[0].click()
    section["reconnected"] = wait_for(lambda: dock.engine_task is None, 120) and (
        plugin.manager.client is not None)
    section["url_after_apply"] = plugin.manager.settings.url
    section["engine_label_after_apply"] = dock.engine_bar.label.text()


@phase("unload")
def unload(section):
    registry = QgsApplication.processingRegistry()
    dock = plugin.dock
    action = plugin.toggle_action
    tool = dock.generate.tool
    band = dock.generate.band
    service = plugin.manager._service
    section["service_running_before"] = service is not None and service.process.poll() is None
    dock.generate.draw_button.setChecked(True)  # unload while the draw tool is active
    # ... and while a long job runs: the plugin may be disabled at any moment.
    fill(dock, "a job the unload interrupts", 888, 17, steps=400)
    dock.generate.set_extent(QgsRectangle(447000, 5411000, 447300, 5411300), UTM)
    layers_before = set(QgsProject.instance().mapLayers())
    files_before = files_in(OUT)
    dock.generate.generate_button.click()
    section["job_running"] = wait_for(
        lambda: re.search(r"running: step [1-9]", dock.generate.status_label.text()),
        60) is not None
    errors_before = len(slot_errors)
    plugin.unload()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    tasks = QgsApplication.taskManager()
    section["tasks_ended"] = wait_for(lambda: tasks.countActiveTasks() == 0, 60)
    pump(0.5)
    section["new_layers"] = sorted(set(QgsProject.instance().mapLayers()) - layers_before)
    section["files_before"] = files_before
    section["files_after"] = files_in(OUT)
    section["staging_after"] = files_in(STAGING)
    section["actions_left"] = len(plugin.actions)
    section["toolbar_removed"] = any(c.args == (action,)
                                     for c in iface.removeToolBarIcon.call_args_list)
    section["menu_removed"] = [c.args[0] for c in iface.removePluginRasterMenu.call_args_list
                               if c.args[1] is action]
    section["layer_action_removed"] = len(iface.removeCustomActionForLayerType.call_args_list)
    section["dock_removed_call"] = any(c.args == (dock,)
                                       for c in iface.removeDockWidget.call_args_list)
    section["dock_deleted"] = sip.isdeleted(dock)
    section["plugin_dock"] = plugin.dock is not None
    section["docks_in_window"] = [d.objectName() for d in window.findChildren(
        QgsDockWidget) if not sip.isdeleted(d)]
    section["provider_left"] = registry.providerById("text2earth") is not None
    section["algorithm_left"] = registry.algorithmById("text2earth:generatescene") is not None
    section["map_tool_left"] = canvas.mapTool() is tool
    section["bands_left"] = sum(1 for item in canvas.scene().items()
                                if isinstance(item, QgsRubberBand) and item is band)
    # The canvas and the project keep working, with nothing of the dock listening any more.
    canvas.setExtent(QgsRectangle(447000, 5411000, 448000, 5412000))
    canvas.setDestinationCrs(WGS84)
    QgsProject.instance().clear()
    pump(0.2)
    section["slot_errors_during_unload"] = slot_errors[errors_before:]
    section["engine_client_left"] = plugin.manager.client is not None
    section["service_ended"] = service is not None and service.process.poll() is not None


for step in (load, levels, draw, generate, variations, reuse, cancel, unreachable,
             processing_phase, unload):
    step()
report["slot_errors"] = slot_errors
report["heavy"] = sorted(m for m in ("rasterio", "torch") if m in sys.modules)
print(json.dumps(report))
