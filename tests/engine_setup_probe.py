"""The set-up and model dialogs in a headless QGIS (mocked iface), driven through the plugin's
own menu actions and buttons. Run by tests/test_engine_setup_ui.py with ``sys.executable``.

Inputs in the environment: T2E_WORK (an empty folder), T2E_WHEELS (the small offline
requirement set), T2E_HUB (a fake hub's URL serving lcybuaa/Text2Earth). Prints one JSON
object on its last line: raw observations per phase, judged by the test.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from unittest import mock

sys.modules.setdefault("mock", mock)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, "/usr/share/qgis/python/plugins")

from qgis.testing import start_app  # noqa: E402
from qgis.testing.mocked import get_iface  # noqa: E402

app = start_app()
iface = get_iface()

from probe_support import wait_for  # noqa: E402
from qgis.core import QgsSettings  # noqa: E402
from qgis.gui import QgsMessageBar  # noqa: E402
from qgis.PyQt.QtWidgets import QApplication, QPushButton  # noqa: E402

import text2earth_qgis  # noqa: E402

WORK = Path(os.environ["T2E_WORK"])
report: dict = {}
slot_errors: list[str] = []
sys.excepthook = lambda kind, value, tb: slot_errors.append(
    "".join(traceback.format_exception(kind, value, tb)))
iface.messageBar.return_value = QgsMessageBar()


def phase(fn):
    section = report.setdefault(fn.__name__, {})
    try:
        fn(section)
    except Exception:  # noqa: BLE001 - reported to the test, which fails on it
        section["error"] = traceback.format_exc()


def button(widget, text):
    return next(b for b in widget.findChildren(QPushButton) if b.text() == text)


plugin = text2earth_qgis.classFactory(iface)
plugin.initGui()
plugin.manager.settings.token_file = str(WORK / "token")
plugin.manager.settings.record_file = str(WORK / "service.json")
menu = {c.args[1].text(): c.args[1] for c in iface.addPluginToRasterMenu.call_args_list}


def run_setup_dialog(dialog):
    dialog.start_button.click()
    started = dialog.task is not None
    finished = wait_for(lambda: dialog.task is None, 240)
    return started, finished


@phase
def setup_ok(section):
    section["menu"] = sorted(menu)
    menu["Set up engine…"].trigger()
    dialog = plugin.dialogs["setup"]
    section["visible"] = dialog.isVisible()
    # Before anything starts: what it will do, worked out in the background.
    section["planned"] = wait_for(lambda: dialog.plan_task is None, 60)
    section["summary"] = dialog.summary_label.text()
    section["advanced_collapsed"] = dialog.advanced.isCollapsed()
    section["defaults"] = {"source": dialog.source_edit.text(),
                           "requirements": dialog.requirements_widget.filePath(),
                           "start_text": dialog.start_button.text()}
    requirements = WORK / "requirements.txt"
    requirements.write_text("# pinned\ntorch==2.0.0\ntinydep==1.0\n")
    dialog.python_widget.setFilePath(sys.executable)
    dialog.folder_widget.setFilePath(str(WORK / "engine-venv"))
    dialog.requirements_widget.setFilePath(str(requirements))
    dialog.source_edit.setText("text2earth-engine")
    dialog.wheels_widget.setFilePath(os.environ["T2E_WHEELS"])
    dialog.torch_combo.setCurrentText("cpu")
    section["started"], section["finished"] = run_setup_dialog(dialog)
    section["status"] = dialog.status_label.text()
    section["progress"] = dialog.progress.value()
    section["log"] = dialog.log_view.toPlainText()
    section["engine_python_setting"] = QgsSettings().value("text2earth/engine_python", "")
    section["manager_python"] = plugin.manager.settings.python
    section["venv_python"] = str(WORK / "engine-venv" / "bin" / "python")
    dialog.replan()
    wait_for(lambda: dialog.plan_task is None, 60)
    section["summary_after"] = dialog.summary_label.text()


@phase
def setup_broken_python(section):
    dialog = plugin.dialogs["setup"]
    broken = WORK / "python3"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    dialog.python_widget.setFilePath(str(broken))
    section["started"], section["finished"] = run_setup_dialog(dialog)
    section["status"] = dialog.status_label.text()
    section["start_enabled"] = dialog.start_button.isEnabled()


@phase
def setup_hidden_failure(section):
    """Closed while it runs: the dialog hides, the set-up goes on, and its failure reaches
    the message bar with the fix."""
    dialog = plugin.dialogs["setup"]
    bar = iface.messageBar()
    before = len(bar.items())
    dialog.start_button.click()  # the broken Python of the phase before
    dialog.reject()
    section["hidden"] = not dialog.isVisible()
    section["finished"] = wait_for(lambda: dialog.task is None, 120)
    items = bar.items()[before:] if len(bar.items()) > before else []
    section["bar"] = [(item.title(), item.text()) for item in items]
    dialog.python_widget.setFilePath("")


@phase
def model_download(section):
    os.environ["HF_ENDPOINT"] = os.environ["T2E_HUB"]
    menu["Download model…"].trigger()
    dialog = plugin.dialogs["model"]
    section["visible"] = dialog.isVisible()
    dialog.cache_widget.setFilePath(str(WORK / "hub"))
    section["state_before"] = dialog.state_label.text()
    dialog.repo_checks["lcybuaa/Text2Earth-inpainting"].setChecked(False)
    button(dialog, "Download").click()
    section["finished"] = wait_for(lambda: dialog.task is None, 120)
    section["status"] = dialog.status_label.text()
    section["state_after"] = dialog.state_label.text()
    section["progress"] = dialog.progress.value()
    section["model_cache_setting"] = plugin.manager.settings.model_cache

    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
    dialog.repo_checks["lcybuaa/Text2Earth-inpainting"].setChecked(True)
    dialog.repo_checks["lcybuaa/Text2Earth"].setChecked(False)
    start = time.monotonic()
    button(dialog, "Download").click()
    section["offline_finished"] = wait_for(lambda: dialog.task is None, 60)
    section["offline_seconds"] = time.monotonic() - start
    section["offline_status"] = dialog.status_label.text()

    dialog.folder_widget.setFilePath(str(WORK))  # not a model folder
    button(dialog, "Use this folder").click()
    section["bad_folder_status"] = dialog.status_label.text()


@phase
def diagnostics(section):
    plugin.manager.settings.url = "http://127.0.0.1:9"  # nothing is started by the dock here
    dock = plugin.ensure_dock()
    section["buttons"] = [b.text() for b in dock.engine_settings.findChildren(QPushButton)
                          if b.text() in ("Set up engine…", "Download model…", "Copy diagnostics")]
    button(dock, "Copy diagnostics").click()
    section["clipboard"] = QApplication.clipboard().text()
    button(dock, "Set up engine…").click()
    section["setup_visible_again"] = plugin.dialogs["setup"].isVisible()


@phase
def unload(section):
    plugin.unload()
    removed = [c.args[1].text() for c in iface.removePluginRasterMenu.call_args_list]
    section["removed"] = sorted(removed)
    section["dialogs_left"] = len(plugin.dialogs)


report["slot_errors"] = slot_errors
print(json.dumps(report))
