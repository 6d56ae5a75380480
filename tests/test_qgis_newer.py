"""The plugin in newer QGIS releases: Debian chroots (tools/qgis_chroot.sh; trixie: QGIS 3.40
on Python 3.13, sid: QGIS 3.44 on Python 3.14) run the load/unload and 1366 x 768 layout
probes. Building a chroot takes minutes and needs root, so these run from
`make test-qgis-newer` (T2E_NEWER_QGIS=trixie,sid), not from the default `make test`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = [s for s in os.environ.get("T2E_NEWER_QGIS", "").split(",") if s]
pytestmark = pytest.mark.skipif(not SUITES, reason="make test-qgis-newer runs these")


@pytest.fixture(scope="module", params=SUITES or ["none"])
def chroot(request):
    out = subprocess.run([str(ROOT / "tools" / "qgis_chroot.sh"), request.param],
                         capture_output=True, text=True, timeout=3600)
    reports = {"suite": request.param, "stdout": out.stdout}
    for line in out.stdout.splitlines():
        if line.startswith(f"{request.param}: QGIS "):
            reports["version"] = line.split(": ", 1)[1]
        for probe in ("plugin_probe.py", "plugin_layout_probe.py"):
            prefix = f"{request.param} {probe}: "
            if line.startswith(prefix):
                reports[probe] = json.loads(line[len(prefix):])
    print(reports.get("version"))
    return reports


def test_plugin_loads_and_unloads_cleanly(chroot):
    report = chroot["plugin_probe.py"]
    assert report["actions"] == ["Text2Earth"] and report["after_unload"] == 0
    assert report["heavy"] == []  # QGIS 3.40+ imports numpy itself: not the plugin's doing
    first, *after = report["window_objects"]
    assert after == [first, first]


def test_dock_fits_1366_x_768_and_first_run_offers_set_up(chroot):
    report = chroot["plugin_layout_probe.py"]
    for tab in ("generate_tab", "edit_tab"):
        assert "error" not in report[tab], report[tab]["error"]
        assert report[tab]["window"] == [1366, 768]
        assert all(b["inside"] and b["visible"] for b in report[tab]["buttons"])
    first = report["first_run"]
    assert first["action"] == "Set up engine…" and first["click_opens"] == ["setup"]
    rows = report["size_checks"]["rows"]
    assert rows["drag_2px"]["generate_enabled"] is False
    assert rows["country"]["generate_enabled"] is False
    assert rows["utm_block"]["planned"] == [764, 509]  # the engine's grid (tests/test_grid)
    assert report["slot_errors"] == []
