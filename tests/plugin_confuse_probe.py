"""The dock's answers to issue 23's confusions, in a headless QGIS with a mocked iface: the
wheel over the form, an extent's level when the canvas is resized, Reuse settings, an engine
killed with SIGKILL, a cancelled task, and status lines that wrap. The engine is the fake
service of tests/fake_service.py in a process of its own. Run by tests/test_plugin_dock_states.py;
prints one JSON object last."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsProject,
    QgsRectangle,
    QgsTask,
)
from qgis.PyQt.QtCore import QPoint, QPointF, Qt
from qgis.PyQt.QtGui import QWheelEvent
from qgis.PyQt.QtWidgets import QApplication
from qgis_harness import iface, phase, pump, report, show_main_window, slot_errors, wait_for

import text2earth_qgis
from text2earth_qgis.core.job_spec import AUTO, LEVEL, RESOLUTION
from text2earth_qgis.core.service.client import EngineClient, LocalService
from text2earth_qgis.tasks import GenerateTask

WORK = Path(os.environ["T2E_WORK"])
UTM = QgsCoordinateReferenceSystem("EPSG:32632")
SERVE = ("import sys, time; sys.path.insert(0, sys.argv[1]);"
         "from fake_service import FakeService;"
         "s = FakeService(sys.argv[2]).__enter__(); print(s.url, flush=True);"
         "print('listening on', s.url, file=sys.stderr, flush=True); time.sleep(600)")

window, canvas = show_main_window()
canvas.setMinimumSize(100, 100)
canvas.setMaximumSize(16777215, 16777215)
plugin = text2earth_qgis.classFactory(iface)
plugin.manager.settings.url = None
plugin.manager.settings.record_file = ""
plugin.initGui()
dock = None
processes = []


def spawn_engine():
    """A local engine as the manager starts one: its process, log and client."""
    log_path = WORK / f"service{len(processes)}" / "service.log"  # stop() removes its folder
    log_path.parent.mkdir(parents=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(Path(__file__).parent), str(WORK / "staging")],
            stdout=subprocess.PIPE, stderr=log, text=True)
    processes.append(process)
    url = process.stdout.readline().strip()
    manager = plugin.manager
    client = EngineClient(url)
    manager._service = LocalService(process, url, client, log_path)
    manager._client = client
    manager._note_health(client.health())
    return process


def open_dock():
    global dock
    spawn_engine()  # connecting then finds it healthy: no real engine is started
    plugin.toggle_action.setChecked(True)
    dock = plugin.dock
    wait_for(lambda: dock.engine_task is None, 30)
    dock.show_engine_state()


def wheel(widget, steps=1):
    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(QPoint(5, 5))), QPoint(0, 0),
                        QPoint(0, -120 * steps), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)
    pump(0.02)


@phase("wheel")
def wheel_phase(section):
    gen = dock.generate
    dock.tabs.setCurrentWidget(gen)
    window.resize(1366, 500)  # a short screen: the form scrolls
    pump(0.2)
    bar = gen.scroll.verticalScrollBar()
    section["scrollable"] = bar.maximum() > 0
    combo, spin = gen.mode_combo, gen.steps_spin
    before = (combo.currentIndex(), spin.value(), bar.value())
    dock.tabs.setFocus()
    wheel(combo, 1)
    wheel(spin, 1)
    section["unfocused"] = {"before": before,
                            "after": (combo.currentIndex(), spin.value(), bar.value())}
    QApplication.setActiveWindow(window)
    spin.setFocus()
    pump(0.05)
    section["spin_focused"] = spin.hasFocus()
    value = spin.value()
    wheel(spin, 1)
    section["focused_spin"] = [value, spin.value()]
    edit = dock.edit_panel
    section["edit_guarded"] = bool(edit.level_spin.focusPolicy() == Qt.FocusPolicy.StrongFocus)
    dock.tabs.setFocus()
    window.resize(1366, 768)
    pump(0.1)


def info(gen):
    return {"level": gen.current_level, "enabled": gen.generate_button.isEnabled(),
            "info": gen.info_label.text(), "status": gen.status_label.text()}


@phase("resize")
def resize_phase(section):
    gen = dock.generate
    QgsProject.instance().setCrs(UTM)
    canvas.setDestinationCrs(UTM)
    canvas.setFixedSize(800, 600)
    pump(0.1)
    canvas.setExtent(QgsRectangle(447000, 5411000, 447800, 5411600))  # ~1 m screen pixels
    pump(0.1)
    gen.prompt_edit.setPlainText("a park near the river")
    gen.mode_combo.setCurrentIndex(gen.mode_combo.findData(AUTO))
    gen.clear_extent()
    section["no_extent_before"] = info(gen)
    canvas.setFixedSize(200, 150)  # the Log panel opened: the same extent, 4x coarser pixels
    pump(0.2)
    section["no_extent_after"] = info(gen)  # without an extent, auto follows the map
    canvas.setFixedSize(800, 600)
    canvas.setExtent(QgsRectangle(447000, 5411000, 447800, 5411600))
    pump(0.2)
    gen.set_extent(QgsRectangle(447100, 5411100, 447400, 5411350), UTM)
    section["drawn"] = info(gen)
    canvas.setFixedSize(200, 150)
    pump(0.2)
    canvas.zoomByFactor(4.0)
    pump(0.2)
    section["resized"] = info(gen)
    section["canvas_mupp"] = [canvas.mapUnitsPerPixel()]
    canvas.setFixedSize(800, 600)
    pump(0.1)


@phase("reuse")
def reuse_phase(section):
    gen = dock.generate
    gen.folder_widget.setFilePath(str(WORK / "out"))
    gen.seed_lock_check.setChecked(True)
    gen.seed_spin.setValue(4321)
    gen.mode_combo.setCurrentIndex(gen.mode_combo.findData(LEVEL))
    gen.level_spin.setValue(17)
    gen.set_extent(QgsRectangle(447100, 5411100, 447400, 5411350), UTM)
    level_job = gen.build_job()[0]
    canvas.setExtent(QgsRectangle(447000, 5411000, 447800, 5411600))
    pump(0.1)
    gen.mode_combo.setCurrentIndex(gen.mode_combo.findData(AUTO))
    gen.set_extent(QgsRectangle(447100, 5411100, 447400, 5411350), UTM)
    auto_job = gen.build_job()[0]
    # A later run from layers, at other settings, then Reuse of the earlier runs.
    for job in (level_job, auto_job):
        gen.start_layers.box.setChecked(True)
        gen.mode_combo.setCurrentIndex(gen.mode_combo.findData(RESOLUTION))
        gen.resolution_spin.setValue(3.0)
        gen.seed_spin.setValue(1)
        canvas.setExtent(QgsRectangle(440000, 5400000, 452800, 5409600))  # 16x further out
        pump(0.1)
        dock.history_panel.reuse_requested.emit(job)
        pump(0.05)
        section[job["qgis_form"]["resolution_mode"]] = {
            "job": job, "rebuilt": gen.build_job()[0],
            "start_from_layers": gen.start_layers.active,
            "mode": gen.mode_combo.currentData(), "info": gen.info_label.text()}
    gen.start_layers.box.setChecked(False)


def messages():
    return [item.text() for item in iface.messageBar().items()]


@phase("crash")
def crash_phase(section):
    gen = dock.generate
    manager = plugin.manager
    section["connected_label"] = dock.engine_bar.label.text()
    dock.show_message("The GPU ran out of memory. (a message from before)", warning=True)
    gen.run_view.failed = True
    gen.run_view.status_label.setText("failed: The GPU ran out of memory.")
    process = processes[-1]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    section["detected"] = wait_for(lambda: manager.state == "crashed", 10)
    pump(0.1)
    section["label"] = dock.engine_bar.label.text()
    section["button"] = [dock.engine_bar.action_button.text(),
                         dock.engine_bar.action_button.isEnabled()]
    section["messages_after_crash"] = messages()
    section["status_after_crash"] = gen.status_label.text()
    # Restarted (as Restart does: a new engine), then a second engine killed mid-job: the
    # job says why, without a GPU or a URL, and the bar says crashed.
    spawn_engine()
    dock.show_engine_state()
    section["restarted_label"] = dock.engine_bar.label.text()
    dock.watch_timer.stop()  # the job finds the death itself
    os.kill(processes[-1].pid, signal.SIGKILL)
    processes[-1].wait(10)
    manager.ensure_running = lambda: manager._client  # the dead engine's client, as mid-job
    gen.generate_button.click()
    wait_for(lambda: gen.task is None, 30)
    pump(0.1)
    section["job_status"] = gen.status_label.text()
    section["job_messages"] = messages()
    section["job_label"] = dock.engine_bar.label.text()
    section["job_button"] = dock.engine_bar.action_button.text()
    spawn_engine()
    dock.show_engine_state()
    section["after_restart_status"] = gen.status_label.text()
    section["after_restart_messages"] = [m for m in messages() if "killed" in m or "GPU" in m]


@phase("cancel")
def cancel_phase(section):
    logged = []
    QgsApplication.messageLog().messageReceived.connect(
        lambda text, tag, level: logged.append([text, tag]))
    spawn_engine()
    manager = plugin.manager
    client = manager._client
    task = GenerateTask(manager, {"prompt": "a cancelled run"}, str(WORK / "c.tif"))
    ended = []
    task.completed.connect(ended.append)
    statuses = []
    task.statusChanged.connect(lambda status: statuses.append(int(status)))
    # The user cancels while the task runs, just before the job is sent.
    manager.ensure_running = lambda: (task.cancel(), client)[1]
    QgsApplication.taskManager().addTask(task)
    wait_for(lambda: bool(ended), 20)
    pump(0.1)
    section["ended"] = ended
    section["status"] = statuses[-1] if statuses else None
    section["terminated"] = int(QgsTask.TaskStatus.Terminated)
    section["logged"] = logged


@phase("wrap")
def wrap_phase(section):
    label = dock.generate.status_label
    path = str(Path.home() / "Documents" / "Text2Earth" / ("20261203_a-park-near-the-river"
                                                           "_s1819520795.pipeline-check.tif"))
    label.setText(f"done: {path}")
    line = label.fontMetrics().height()
    section["text"] = label.text()
    section["word_wrap"] = label.wordWrap()
    section["height_at_200"] = label.heightForWidth(200)
    section["line"] = line
    section["widest_word"] = max(label.fontMetrics().horizontalAdvance(w)
                                 for w in label.text().split())
    bar = dock.engine_bar.label
    section["engine_wraps"] = bar.wordWrap()
    # What a user copies from the line (its context menu's Copy) is the path itself.
    from qgis.PyQt.QtWidgets import QApplication

    QApplication.clipboard().clear()
    [copy] = [a for a in label.actions() if a.text() == "Copy"]
    copy.trigger()
    section["copied"] = QApplication.clipboard().text()
    section["full_path"] = path


open_dock()
for step in (wheel_phase, resize_phase, reuse_phase, crash_phase, cancel_phase, wrap_phase):
    step()
plugin.unload()
for process in processes:
    if process.poll() is None:
        process.kill()
report["slot_errors"] = slot_errors
report["qgis"] = Qgis.QGIS_VERSION
print(json.dumps(report), flush=True)
os._exit(0)
