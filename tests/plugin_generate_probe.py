"""One Generate through the dock against an engine that is already serving (a newer QGIS in a
Debian chroot, the engine from the host's venv on 127.0.0.1): connect, generate, load the
result layer, unload.

Run by tools/qgis_chroot.sh when the environment names an engine: T2E_ENGINE_URL, T2E_TOKEN_FILE
(the service's token, copied into the chroot) and T2E_WORK (an empty folder). Uses only the
plugin and QGIS (the chroot has no rasterio); prints one JSON object on its last line, which
tests/test_qgis_newer.py judges, reading the written file with rasterio on the host.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from qgis.core import Qgis, QgsCoordinateReferenceSystem, QgsProject, QgsRectangle
from qgis_harness import app, iface, report, show_main_window, slot_errors, wait_for

import text2earth_qgis
from text2earth_qgis.core.job_spec import LEVEL

WORK = Path(os.environ["T2E_WORK"])
OUT = WORK / "out"
UTM = QgsCoordinateReferenceSystem("EPSG:32632")
BBOX = [447000.0, 5411000.0, 447300.0, 5411250.0]  # 300 x 250 m at level 16

window, canvas = show_main_window()
plugin = text2earth_qgis.classFactory(iface)
settings = plugin.manager.settings
settings.url = os.environ["T2E_ENGINE_URL"]
settings.token_file = os.environ["T2E_TOKEN_FILE"]
settings.record_file = ""
plugin.initGui()
section = report.setdefault("generate", {"qgis": Qgis.QGIS_VERSION,
                                         "python": sys.version.split()[0]})
try:
    plugin.toggle_action.setChecked(True)  # opens the dock, which connects to the engine
    dock = plugin.dock
    section["connected"] = wait_for(lambda: dock.engine_task is None, 120) and \
        plugin.manager.client is not None
    section["engine_state"] = plugin.manager.state
    section["health"] = {k: plugin.manager.health.get(k)
                         for k in ("max_pixels", "demo_weights", "version")}
    gen = dock.generate
    gen.prompt_edit.setPlainText("a park near the river")
    gen.seed_lock_check.setChecked(True)
    gen.seed_spin.setValue(1234)
    gen.steps_spin.setValue(2)
    gen.mode_combo.setCurrentIndex(gen.mode_combo.findData(LEVEL))
    gen.level_spin.setValue(16)
    gen.folder_widget.setFilePath(str(OUT))
    QgsProject.instance().setCrs(UTM)
    canvas.setDestinationCrs(UTM)
    gen.set_extent(QgsRectangle(*BBOX), UTM)
    before = set(QgsProject.instance().mapLayers())
    gen.generate_button.click()
    section["started"] = gen.task is not None
    end = time.monotonic() + 240
    while gen.task is not None and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
    section["finished"] = gen.task is None
    section["status"] = gen.status_label.text()
    section["messages"] = [item.text() for item in iface.messageBar().items()]
    layers = [layer for key, layer in QgsProject.instance().mapLayers().items()
              if key not in before]
    section["new_layers"] = [{
        "name": layer.name(), "source": layer.source(), "valid": layer.isValid(),
        "authid": layer.crs().authid(), "size": [layer.width(), layer.height()],
        "extent": [layer.extent().xMinimum(), layer.extent().yMinimum(),
                   layer.extent().xMaximum(), layer.extent().yMaximum()],
    } for layer in layers]
    section["files"] = sorted(p.name for p in OUT.glob("*.tif")) if OUT.exists() else []
except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
    import traceback

    section["error"] = f"{exc}\n{traceback.format_exc()}"
plugin.unload()
report["slot_errors"] = slot_errors
print(json.dumps(report), flush=True)
os._exit(0)
