"""The plugin in newer QGIS releases: Debian chroots (tools/qgis_chroot.sh; trixie: QGIS 3.40
on Python 3.13, sid: QGIS 3.44 on Python 3.14) run the load/unload and 1366 x 768 layout
probes, one Generate through the dock against an engine served from this checkout's venv
on 127.0.0.1 (the demo weights), whose file is read here with rasterio, and the QGIS
application's own STAC support on a demo batch's collection. Building a chroot takes
minutes and needs root, so these run from `make test-qgis-newer` (T2E_NEWER_QGIS=trixie,sid),
not from the default `make test`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from text2earth_qgis.core.service.client import start_local_service

ROOT = Path(__file__).resolve().parents[1]
SUITES = [s for s in os.environ.get("T2E_NEWER_QGIS", "").split(",") if s]
pytestmark = pytest.mark.skipif(not SUITES, reason="make test-qgis-newer runs these")


PROBES = ("plugin_probe.py", "plugin_layout_probe.py", "plugin_swipe_probe.py",
          "plugin_generate_probe.py", "plugin_stac_probe.py")
BBOX = [447000.0, 5411000.0, 447300.0, 5411250.0]  # plugin_generate_probe's, EPSG:32632


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The engine from this venv, serving on 127.0.0.1 with the demo weights (no hub)."""
    work = tmp_path_factory.mktemp("engine")
    service = start_local_service(sys.executable, output_dirs=[str(work / "out")],
                                  token_file=str(work / "token"), device="cpu",
                                  extra_args=["--demo-fallback"],
                                  env={"HF_HUB_OFFLINE": "1"}, timeout=300)
    yield {"url": service.url, "token": str(work / "token")}
    service.stop()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A two-item batch on the demo weights (one UTM, one WGS 84 item): COGs + collection.json."""
    work = tmp_path_factory.mktemp("batch")
    (work / "items.csv").write_text(
        "id,prompt,bbox,crs,level,seed\n"
        'farm,farmland,"447000,5411000,447060,5411060",EPSG:32632,17,1\n'
        'town,dense city,"10.3,48.8,10.3006,48.8004",EPSG:4326,17,3\n')
    out = work / "out"
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "batch", str(work / "items.csv"), "--out-dir",
         str(out), "--demo-fallback", "--steps", "1", "--tile", "256", "--precision", "fp32",
         "--quiet"], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module", params=SUITES or ["none"])
def chroot(request, engine, batch):
    env = dict(os.environ, T2E_ENGINE_URL=engine["url"], T2E_ENGINE_TOKEN=engine["token"],
               T2E_STAC_DIR=str(batch))
    out = subprocess.run([str(ROOT / "tools" / "qgis_chroot.sh"), request.param],
                         capture_output=True, text=True, timeout=3600, env=env)
    reports = {"suite": request.param, "stdout": out.stdout,
               "root": ROOT / "build" / "chroots" / request.param, "batch": batch}
    for line in out.stdout.splitlines():
        if line.startswith(f"{request.param}: QGIS "):
            reports["version"] = line.split(": ", 1)[1]
        for probe in PROBES:
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


def test_the_dock_generates_against_the_hosts_engine_and_loads_the_layer(chroot):
    report = chroot["plugin_generate_probe.py"]
    assert report["slot_errors"] == []
    run = report["generate"]
    assert "error" not in run, run["error"]
    print(chroot["suite"], run["qgis"], run["python"])
    assert run["connected"] and run["engine_state"] == "connected"
    assert run["health"]["demo_weights"] is True  # announced before the job, by /health
    assert run["started"] and run["finished"] and run["messages"] == []
    (layer,) = run["new_layers"]
    assert layer["valid"] and layer["authid"] == "EPSG:32632"
    assert layer["name"] == "scene: a park near the river — Text2Earth (pipeline check)"
    assert run["status"] == f"done: {layer['source']}"
    assert run["files"] == [Path(layer["source"]).name]
    # The file the chroot's QGIS loaded, read on the host: the extent drawn, in its CRS, at
    # level 16 (2.36 m Mercator pixel x cos(48.85 N) = 1.57 m).
    path = chroot["root"] / layer["source"].lstrip("/")
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32632
        assert list(src.bounds) == pytest.approx(BBOX, abs=1e-6)
        assert [src.width, src.height] == layer["size"]
        assert src.res[0] == pytest.approx(1.57, abs=0.01)
        assert src.tags()["TEXT2EARTH_LEVEL"] == "16"


def test_the_swipe_shows_the_base_left_and_the_result_right_of_the_line(chroot):
    report = chroot["plugin_swipe_probe.py"]
    assert report["slot_errors"] == [] and "error" not in report["swipe"], report["swipe"]
    seen = report["swipe"]
    assert seen["tool_active"] and seen["rendered"] and seen["fraction_after_drag"] == 0.7
    for shot, line in (("at_0_3", 240), ("after_drag", 560)):
        for x, rgb in seen[shot]["rows"]["300"]:
            if 0 < x < line - 4:
                assert rgb == [0, 0, 255], (shot, x)
            elif x > line + 4:
                assert rgb == [255, 0, 0], (shot, x)
    assert seen["items_after_esc"] == 0 and seen["items_after_removal"] == 0


def test_qgis_stac_support_opens_the_batch_collection_and_its_items_cogs(chroot):
    """The Browser's STAC provider on a file:// connection to collection.json (QGIS 3.40: no
    Python bindings for it, so the probe runs in the application). Judged against the STAC
    files and COGs themselves, read here with json and rasterio."""
    report = chroot["plugin_stac_probe.py"]
    assert "error" not in report, report["error"]
    print(chroot["suite"], report["qgis"], report["python"])
    collection = json.loads((Path(chroot["batch"]) / "collection.json").read_text())
    links = [link for link in collection["links"] if link["rel"] == "item"]
    assert report["provider"] and report["collection"]["tooltip"].startswith("STAC Collection")
    assert [c[2] for c in report["collection"]["children"]] == [
        "file:///stac/" + link["href"].removeprefix("./") for link in links]
    assert len(report["items"]) == len(links) == 2
    for seen, link in zip(report["items"], links, strict=True):
        path = Path(chroot["batch"]) / link["href"]
        item = json.loads(path.read_text())
        assert "error" not in seen, seen["error"]
        assert seen["errors"] == [] and seen["drag_enabled"] is True
        assert item["properties"]["title"] in seen["tooltip"]
        (asset,) = item["assets"].values()
        cog = (path.parent / asset["href"]).resolve()
        (uri,) = seen["uris"]
        assert uri["uri"] == "file:///stac/" + cog.name and uri["name"] == asset["title"]
        # QGIS 3.40 offers a local asset as a bare file:// URI (no layer type, no provider)
        (layer,) = seen["opened"]
        assert layer["valid"] and layer["provider"] == "gdal" and layer["bands"] == 3
        assert layer["authid"] == item["properties"]["proj:code"]
        with rasterio.open(cog) as src:
            assert layer["size"] == [src.width, src.height] and src.count == 3
        assert layer["bbox_wgs84"] == pytest.approx(item["bbox"], abs=1e-7)
