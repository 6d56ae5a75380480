"""What the headless-QGIS probe scripts share: the app, a mocked iface whose main window
holds an 800 x 600 canvas, phases that report their own exceptions, and event pumping.

Imported by the probes (run as scripts, so this folder is on sys.path), never by pytest: it
starts QGIS, whose GDAL must not meet rasterio's.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from unittest import mock

sys.modules.setdefault("mock", mock)  # qgis.testing.mocked imports the old 'mock' package
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, "/usr/share/qgis/python/plugins")  # the Processing framework

from qgis.testing import start_app  # noqa: E402
from qgis.testing.mocked import get_iface  # noqa: E402

app = start_app()
iface = get_iface()

from probe_support import wait_for  # noqa: E402,F401 - the probes' one wait
from qgis.gui import QgsMessageBar  # noqa: E402

report: dict = {}
slot_errors: list[str] = []


def excepthook(kind, value, tb):  # exceptions raised inside Qt slots land here
    slot_errors.append("".join(traceback.format_exception(kind, value, tb)))


sys.excepthook = excepthook


def phase(name):
    def wrap(fn):
        def run(*args, **kwargs):
            section = report.setdefault(name, {})
            try:
                fn(section, *args, **kwargs)
            except Exception:  # noqa: BLE001 - reported to the test, which fails on it
                section["error"] = traceback.format_exc()
        return run
    return wrap


def pump(seconds=0.0):
    end = time.monotonic() + seconds
    while True:
        app.processEvents()
        if time.monotonic() >= end:
            return
        time.sleep(0.01)


def show_main_window():
    """The main window the mocked iface stands for: canvas in the middle, docks around."""
    window = iface.mainWindow()
    canvas = iface.mapCanvas()
    window.setCentralWidget(canvas)
    canvas.setFixedSize(800, 600)
    iface.addDockWidget.side_effect = window.addDockWidget
    iface.removeDockWidget.side_effect = window.removeDockWidget
    iface.messageBar.return_value = QgsMessageBar()
    window.show()
    pump(0.2)
    return window, canvas


def use_local_engine(settings, work: Path, model: str | None) -> None:
    """Plugin settings that start the engine from this checkout, on the CPU, in ``work``."""
    settings.python = sys.executable
    settings.model = model
    settings.device = "cpu"
    settings.token_file = str(work / "token")
    settings.staging_dir = str(work / "staging")
    settings.url = None
