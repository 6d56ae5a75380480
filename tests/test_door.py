"""The door, end to end, as users get it: the zip `make package` builds, installed by QGIS's own
"Install from ZIP" into a fresh profile of the real QGIS desktop (under Xvfb, 1366 x 768); its own
"Set up engine…" runs with the dialog's defaults into the profile's empty data folder (pip
reaching what this machine's pip reaches); the dock starts that engine; an extent dragged on
the canvas with the mouse and Generate give one layer. tests/door_desktop.py drives QGIS and
reports; this test judges the report and reads the file with rasterio, GDAL and rio-cogeo.

Slow (the set-up installs a whole engine environment: about 2-4 minutes with pip's cache
warm), and it is the one test that shows a first-time user gets an engine at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QGIS = shutil.which("qgis")
XVFB = shutil.which("xvfb-run")

pytestmark = pytest.mark.skipif(not (QGIS and XVFB),
                                reason="the QGIS desktop and xvfb-run are installed by make")


def pip_cache_dir() -> str:
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "pip", "cache", "dir"],
                         capture_output=True, text=True)
    return out.stdout.strip()


def engines_running(venv: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(venv)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "pgrep" not in line]


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    work = tmp_path_factory.mktemp("door")
    subprocess.run(["make", "-s", "package"], cwd=ROOT, check=True, capture_output=True)
    profiles = work / "qgis profiles"  # a space, as in "C:\Users\...\QGIS3"
    profile = profiles / "profiles" / "default"
    home = work / "home"
    home.mkdir()
    # A new user of this machine: pip's own configuration (indexes, mirrors) is the machine's,
    # and so is any pyenv; everything else in their home starts empty.
    user_pip = Path.home() / ".config" / "pip"
    if user_pip.is_dir():
        shutil.copytree(user_pip, home / ".config" / "pip")
    shots = work / "shots"
    shots.mkdir()
    report_path = work / "report.json"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "T2E_", "TEXT2EARTH_", "HF_"))}
    if (Path.home() / ".pyenv").is_dir():
        env.setdefault("PYENV_ROOT", str(Path.home() / ".pyenv"))
    env.update(HOME=str(home), QT_QPA_PLATFORM="xcb", PIP_CACHE_DIR=pip_cache_dir(),
               T2E_DOOR_ZIP=str(ROOT / "dist" / "text2earth_qgis.zip"),
               T2E_DOOR_REPORT=str(report_path), T2E_DOOR_TESTS=str(ROOT / "tests"),
               T2E_DOOR_SHOTS=str(shots),
               PATH=":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p))
    log = work / "qgis.log"
    with open(log, "w") as out:
        process = subprocess.run(
            [XVFB, "-a", "-s", "-screen 0 1366x768x24", QGIS, "--nologo", "--noversioncheck",
             "--profiles-path", str(profiles), "--code", str(ROOT / "tests" / "door_desktop.py")],
            cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1700)
    assert report_path.is_file(), f"QGIS exited {process.returncode} without a report:\n" \
        + log.read_text()[-3000:]
    report = json.loads(report_path.read_text())
    report["_work"], report["_profile"], report["_home"] = str(work), str(profile), str(home)
    return report


@pytest.mark.timeout(1800)
def test_the_zips_set_up_with_its_defaults_gives_an_engine_in_the_profile(door):
    assert "error" not in door, door["error"]
    assert not door["loaded_before_install"]
    assert door["plugin_file"].startswith(door["_profile"]), "not the zip's copy was loaded"
    assert door["setup_dialog_visible"] and door["setup_started"]
    # Before anything starts the dialog says how much it downloads and which torch, and why.
    assert door["setup_summary_ready"] and door["setup_advanced_collapsed"]
    summary = door["setup_summary"]
    assert "GB" in summary and "torch" in summary.lower(), summary
    assert door["setup_finished"], door
    assert "set up" in door["setup_status"].lower(), (door["setup_status"],
                                                      door["setup_log_tail"])
    venv_python = Path(door["engine_python"])
    assert venv_python.is_file() and str(venv_python).startswith(door["_profile"])
    # The environment is the engine's own: QGIS's Python got nothing installed.
    check = subprocess.run([str(venv_python), "-c", "import torch, engine.cli, rasterio"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.timeout(60)
def test_the_dock_starts_that_engine_and_a_dragged_extent_becomes_a_layer(door):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    assert "generate" in door["phases"], door
    assert door["engine_connected"], door["engine_line"]
    assert "connected" in door["engine_line"]
    assert door["drawn_crs"] == "EPSG:32632"
    assert door["generate_enabled"]
    assert door["generate_finished"] and door["generate_status"].startswith("done"), door
    [layer] = door["layers"]
    assert layer["valid"] and layer["crs"] == "EPSG:32632"
    path = Path(layer["source"])
    # The default output folder of a new user: Documents/Text2Earth in their home.
    assert path.is_file() and str(path).startswith(door["_home"])
    with rasterio.open(path) as dataset:
        assert dataset.crs.to_epsg() == 32632
        # The file lands exactly on the extent dragged on the canvas.
        assert list(dataset.bounds) == pytest.approx(door["drawn_extent"], abs=1e-6)
        tags = dataset.tags()
        # The level the dock showed before Generate is the one the engine used.
        assert dataset.count == 3 and tags["TEXT2EARTH_LEVEL"] == str(door["shown_level"])
        assert "synthetic" in (dataset.descriptions[0] or "") + json.dumps(tags).lower()
    valid, errors, _ = cog_validate(str(path))
    assert valid, errors
    gdalinfo = subprocess.run(["gdalinfo", "-json", str(path)], capture_output=True, text=True)
    corner = json.loads(gdalinfo.stdout)["cornerCoordinates"]
    assert corner["lowerLeft"] == pytest.approx(door["drawn_extent"][:2], abs=1e-3)  # 3 decimals


def test_nothing_is_left_running_and_no_error_was_shown(door):
    assert "unload" in door["phases"], door
    assert not [m for m in door.get("message_bar", []) if "fail" in m.lower()
                or "error" in m.lower()], door["message_bar"]
    assert engines_running(Path(door["_profile"])) == []
