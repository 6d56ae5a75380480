"""Load the plugin in a headless QGIS with a mocked iface; print what it did, as JSON."""

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
import text2earth_qgis  # noqa: E402

plugin = text2earth_qgis.classFactory(iface)
plugin.initGui()
actions = [a.text() for a in plugin.actions]
plugin.unload()
heavy = sorted(m for m in ("torch", "diffusers", "transformers", "rasterio", "numpy")
               if m in sys.modules)
print(json.dumps({"actions": actions, "after_unload": len(plugin.actions), "heavy": heavy}))
