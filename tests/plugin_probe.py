"""Load and unload the plugin twice in a headless QGIS with a mocked iface; print what it did,
as JSON: its actions, what it left behind, and which heavy modules the plugin itself imported
(QGIS 3.40+ imports numpy on its own: only modules new after the plugin loaded count)."""

import json
import sys
from pathlib import Path
from unittest import mock

sys.modules.setdefault("mock", mock)  # qgis.testing.mocked imports the old 'mock' package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, "/usr/share/qgis/python/plugins")  # the Processing framework

from qgis.testing import start_app  # noqa: E402
from qgis.testing.mocked import get_iface  # noqa: E402

app = start_app()
iface = get_iface()
HEAVY = ("torch", "diffusers", "transformers", "rasterio", "numpy")
before = set(sys.modules)

from qgis.PyQt.QtCore import QCoreApplication, QEvent, QObject  # noqa: E402

import text2earth_qgis  # noqa: E402


def objects_of(window):
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    return len(window.findChildren(QObject))


window = iface.mainWindow()
counts = [objects_of(window)]
actions = []
for _ in range(2):  # a reload is an unload and a load
    plugin = text2earth_qgis.classFactory(iface)
    plugin.initGui()
    actions.append([a.text() for a in plugin.actions])
    plugin.toggle_action.trigger()  # the dock too
    plugin.unload()
    counts.append(objects_of(window))
heavy = sorted(m for m in HEAVY if m in sys.modules and m not in before)
print(json.dumps({"actions": actions[0], "after_unload": len(plugin.actions), "heavy": heavy,
                  "qgis_imported": sorted(m for m in HEAVY if m in before),
                  "window_objects": counts}))
