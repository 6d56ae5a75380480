"""The QGIS plugin end to end: load/unload, the extent tool, auto level, generate, cancel, errors,
Processing, and the screenshot.

QGIS (Debian's GDAL) and rasterio (its own GDAL) must not share a process, so the plugin runs
in one subprocess (tests/plugin_dock_probe.py, shared by every test here through a module
fixture) that reports raw observations as JSON; the checks below judge them against
independent references: pyproj for latitudes and ground distances, rasterio for the files,
the scale module's formula, and the numbers the probe asked for.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from pyproj import CRS, Geod, Transformer

from text2earth_qgis.core.contract.scale import level_for_resolution, level_for_scale


def scene_name(prompt: str) -> str:
    """A generation's layer: the prompt first, Text2Earth and 'synthetic' last."""
    return f"scene: {prompt} — Text2Earth (synthetic)"

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).with_name("plugin_dock_probe.py")
SCREENSHOT = ROOT / "docs" / "screenshot.png"
GEOD = Geod(ellps="WGS84")


@pytest.fixture(scope="module")
def probe(tiny_t2i, tmp_path_factory):
    work = tmp_path_factory.mktemp("plugin")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", T2E_MODEL=str(tiny_t2i),
               T2E_WORK=str(work))
    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True,
                            env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["work"] = str(work)
    return report


def section(report, name):
    part = report[name]
    assert "error" not in part, part["error"]
    return part


def latitude(x, y, crs):
    crs = CRS.from_user_input(crs)
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)[1]


def approx_bbox(bbox):
    size = max(bbox[2] - bbox[0], bbox[3] - bbox[1])
    return pytest.approx(list(bbox), abs=1e-6 * size)


# ----- 1. load, dock, provider; unload -----------------------------------------------------

def test_plugin_loads_registers_processing_and_opens_its_dock(probe):
    load = section(probe, "load")
    assert load["provider_before"] is False
    assert load["actions"] == ["Text2Earth"]
    assert load["toolbar_added"] is True
    assert load["menu_added"] == ["&Text2Earth"]
    # On rasters: 'Regenerate with these settings' and 'Swipe: compare with the layers under it'
    assert load["layer_action_added"] == 2
    assert load["provider"] == "Text2Earth"
    assert load["algorithm"] == "Generate scene"
    assert {"EXTENT", "PROMPT", "LEVEL", "RESOLUTION", "SEED", "STEPS", "OUTPUT"} <= set(
        load["algorithm_params"])
    assert load["dock_before_toggle"] is False  # built lazily, on first use
    assert load["checked_after_open"] is True
    assert load["dock_shown"] is True
    assert load["dock_area"] == load["right_area"]
    assert load["checked_after_close"] is False
    assert load["dock_hidden_after_close"] is True
    assert load["same_dock_reopened"] is True
    # Opening the dock started the local engine by itself.
    # While the engine starts, its button cannot start a second one.
    assert load["while_starting"] == {"text": "Starting…", "enabled": False, "task": True}
    assert load["engine_connected"] is True
    assert load["engine_label"].startswith("Engine: connected")
    assert load["connect_enabled"] is False


def test_unload_removes_actions_dock_provider_and_engine(probe):
    unload = section(probe, "unload")
    assert unload["actions_left"] == 0
    assert unload["toolbar_removed"] is True
    assert unload["menu_removed"] == ["&Text2Earth"]
    assert unload["layer_action_removed"] == 2
    assert unload["dock_removed_call"] is True
    assert unload["dock_deleted"] is True
    assert unload["plugin_dock"] is False
    assert unload["docks_in_window"] == []
    assert unload["provider_left"] is False
    assert unload["algorithm_left"] is False
    assert unload["map_tool_left"] is False  # it was active when the plugin was unloaded
    assert unload["bands_left"] == 0
    # Zooming, reprojecting and clearing the project afterwards reach no dead slot.
    assert unload["slot_errors_during_unload"] == []
    assert unload["service_running_before"] is True
    assert unload["service_ended"] is True
    assert unload["engine_client_left"] is False


def test_unload_during_a_run_leaves_no_layer_and_no_file(probe):
    unload = section(probe, "unload")
    assert unload["job_running"] is True
    assert unload["tasks_ended"] is True
    assert unload["new_layers"] == []
    assert unload["files_after"] == unload["files_before"]
    assert unload["staging_after"] == []


def test_no_exception_escaped_into_qt_and_no_rasterio_in_qgis(probe):
    assert probe["slot_errors"] == []
    assert probe["heavy"] == []  # nor torch: the plugin process never imports the engine


# ----- 2. the extent tool, with mouse events on a shown 800 x 600 canvas ---------------------

def test_canvas_is_shown_at_its_fixed_size(probe):
    draw = section(probe, "draw")
    # 800 x 600 less the view's 1 px frame; the map renders at the viewport's size.
    assert draw["viewport"] == draw["output_size"]
    assert abs(draw["viewport"][0] - 800) <= 2 and abs(draw["viewport"][1] - 600) <= 2


def test_drawn_extent_is_the_dragged_rectangle(probe):
    draw = section(probe, "draw")
    free, pixel = draw["free"], draw["mupp"]
    assert free["tool_active"] is True
    (x1, y1), (x2, y2) = free["start_map"], free["end_map"]
    expected = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
    # Independent: 400 x 300 screen pixels at ~1.003 m/px from (447000, 5411600) top left.
    assert expected == pytest.approx([447100.3, 5411178.6, 447501.7, 5411479.6], abs=2)
    assert free["extent"] == pytest.approx(expected, abs=pixel)
    assert free["extent_crs"] == "EPSG:32632"
    assert free["band"] == pytest.approx(free["extent"], abs=1e-6)  # the outline shows it
    assert free["tool_after"] is False and free["draw_checked_after"] is False
    assert free["extent_label"].endswith("(EPSG:32632) — 401 x 301 m")


def test_square_option_draws_a_square_from_the_start_point(probe):
    draw = section(probe, "draw")
    square, pixel = draw["square"], draw["mupp"]
    xmin, ymin, xmax, ymax = square["extent"]
    (x1, y1), (x2, _) = square["start_map"], square["end_map"]
    assert xmax - xmin == pytest.approx(ymax - ymin, rel=1e-9)
    assert xmax - xmin == pytest.approx(abs(x2 - x1), abs=pixel)  # the dragged width
    assert xmin == pytest.approx(x1, abs=pixel) and ymax == pytest.approx(y1, abs=pixel)
    assert square["draw_checked_after"] is False


def test_canvas_extent_button_takes_the_visible_extent(probe):
    button = section(probe, "draw")["canvas_button"]
    assert button["extent"] == pytest.approx(button["canvas"], abs=1e-6)
    assert button["crs"] == "EPSG:32632"
    xmin, ymin, xmax, ymax = button["extent"]  # asked for 446000..447600 x 5410000..5411200
    assert xmin <= 446000 and xmax >= 447600 and ymin <= 5410000 and ymax >= 5411200


# ----- 3. auto level follows the canvas scale ---------------------------------------------

def level_rows(report):
    return section(report, "levels")["rows"]


def test_auto_level_is_the_level_of_a_screen_pixel_at_the_canvas_latitude(probe):
    rows = level_rows(probe)
    assert {r["authid"] for r in rows} == {"EPSG:32632", "EPSG:3857", "EPSG:4326"}
    for row in rows:
        assert row["canvas_crs"] == row["authid"]
        lat = latitude(*row["centre"], row["authid"])
        expected = level_for_resolution(ground_pixel(row), lat).level
        assert row["level"] == expected, row
        assert re.match(rf"level {expected} \(auto: a screen pixel is ", row["label"]), row["label"]
        assert f"at latitude {lat:.2f}" in row["label"]
        # Zooming alone updated the dock (scaleChanged), before any explicit update_info().
        assert row["by_signal"] == {"label": row["label"], "level": row["level"]}
    # Where QGIS's map scale is a ground scale (UTM near its central meridian), the level is
    # also the map-scale formula's.
    for row in rows:
        if row["authid"] == "EPSG:32632":
            lat = latitude(*row["centre"], row["authid"])
            assert row["level"] == level_for_scale(row["scale"], lat, dpi=row["dpi"]).level
    expected_lat = {"EPSG:32632": 48.8, "EPSG:4326": 60.0}
    for row in rows:
        if row["authid"] in expected_lat:
            assert latitude(*row["centre"], row["authid"]) == pytest.approx(
                expected_lat[row["authid"]], abs=0.1)


def test_auto_level_changes_by_two_when_the_scale_changes_by_four(probe):
    groups: dict = {}
    for row in level_rows(probe):
        groups.setdefault((row["authid"], tuple(row["centre"])), []).append(row)
    assert len(groups) == 4
    for rows in groups.values():
        for near, far in zip(rows, rows[1:], strict=False):
            assert far["scale"] == pytest.approx(4 * near["scale"], rel=1e-6)
            assert far["level"] == near["level"] - 2, (near, far)


def ground_pixel(row):
    """Metres on the ground across one screen pixel at the canvas centre (pyproj geodesic)."""
    x, y = row["centre"]
    to_geo = Transformer.from_crs(row["authid"], "EPSG:4326", always_xy=True)
    lon1, lat1 = to_geo.transform(x - row["mupp"] / 2, y)
    lon2, lat2 = to_geo.transform(x + row["mupp"] / 2, y)
    return GEOD.inv(lon1, lat1, lon2, lat2)[2]


def rows_where(report, authid, north):
    rows = [r for r in level_rows(report) if r["authid"] == authid
            and (latitude(*r["centre"], authid) > 30) == north]
    assert rows
    return rows


@pytest.mark.parametrize("authid, north", [
    ("EPSG:32632", True),
    ("EPSG:3857", False),
    ("EPSG:3857", True),  # QGIS's scale here is in Mercator metres, 2x the ground at 60 N
    ("EPSG:4326", True),  # and here a spherical approximation, 0.67x the ground at 60 N
])
def test_auto_level_matches_the_ground_size_of_a_screen_pixel(probe, authid, north):
    """README: 'the level whose pixel matches a screen pixel at the current scale'."""
    for row in rows_where(probe, authid, north):
        lat = latitude(*row["centre"], authid)
        assert row["level"] == level_for_resolution(ground_pixel(row), lat).level, row


# ----- 4. generate end to end through the real local service ------------------------------

@pytest.mark.parametrize("case", ["utm", "geo"])
def test_generate_adds_the_layer_on_the_extent(probe, case):
    run = section(probe, "generate")[case]
    out = Path(probe["work"]) / "out"
    assert run["started"] and run["finished"], run["labels"]
    assert run["status"].startswith("done: "), run["status"]
    assert any(re.match(r"running: step \d+ of 2", label) for label in run["labels"])
    assert run["messages"] == []
    assert run["generate_enabled"] is True and run["cancel_enabled"] is False
    assert len(run["new_layers"]) == 1
    layer = run["new_layers"][0]
    assert layer["name"] == scene_name(run["prompt"])
    assert layer["group"] == "Text2Earth"
    assert layer["authid"] == run["authid"]
    assert layer["extent"] == approx_bbox(run["bbox"])
    # The file: in the chosen folder, named by the pattern, and where it says it is.
    path = Path(layer["source"])
    assert path.parent == out and path.is_file()
    assert re.fullmatch(rf"\d{{8}}_[a-z0-9-]+_s{run['seed']}\.tif", path.name), path.name
    assert run["status"] == f"done: {path}"
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == int(run["authid"].split(":")[1])
        assert list(ds.bounds) == approx_bbox(run["bbox"])
        tags = ds.tags()
    assert tags["TEXT2EARTH_PROMPT"] == run["prompt"]
    assert run["staging"] == []  # moved out of the engine's folder, not copied
    # Metadata: says synthetic, and holds the parameters.
    abstract = layer["abstract"].splitlines()
    assert abstract[0].startswith("SYNTHETIC")
    assert f"prompt: {run['prompt']}" in abstract
    assert f"seed: {run['seed']}" in abstract
    assert f"level: {run['level']}" in abstract
    assert layer["title"] == layer["name"]
    job = json.loads(layer["job"])
    assert job["bbox"] == approx_bbox(run["bbox"]) and job["crs"] == run["authid"]
    assert job["prompt"] == run["prompt"] and job["seed"] == run["seed"]
    # History: newest first, with the parameters and the file.
    assert run["history"][0].startswith("scene: " + run["prompt"])
    assert f"seed {run['seed']}, level {run['level']}" in run["history"][0]
    assert run["history_paths"][-1] == str(path)


def test_generated_layers_stack_in_one_group(probe):
    gen = section(probe, "generate")
    assert gen["top_level"] == ["Text2Earth"]
    assert gen["group_children"] == [scene_name(gen["geo"]["prompt"]),
                                     scene_name(gen["utm"]["prompt"])]  # newest on top
    assert len(gen["geo"]["history"]) == 2


def test_two_generates_with_unchanged_settings_give_two_layers(probe):
    runs = section(probe, "variations")
    out = Path(probe["work"]) / "out"
    free = runs["free"]
    assert [len(run["layers"]) for run in free] == [1, 1]
    seeds = [run["layers"][0]["seed"] for run in free]
    assert seeds[0] != seeds[1]  # a new seed per run: a new variation
    assert [run["seed_shown"] for run in free] == seeds  # the form shows the seed used
    locked = runs["locked"]
    assert [len(run["layers"]) for run in locked] == [1, 1]
    assert {run["layers"][0]["seed"] for run in locked} == {locked[0]["seed_shown"]}
    first, second = (Path(run["layers"][0]["source"]) for run in locked)
    # Same settings, same seed: the name takes a counter; nothing is overwritten.
    base = re.escape(free[-1]["layers"][0]["source"].removesuffix(".tif"))
    assert re.fullmatch(rf"{base}_2\.tif", str(first)), first  # the free run's seed, kept
    assert re.fullmatch(rf"{base}_3\.tif", str(second)), second
    sources = [Path(run["layers"][0]["source"]) for run in free + locked]
    assert len(set(sources)) == 4 and all(p.parent == out and p.is_file() for p in sources)
    for run in free + locked:
        assert run["status"].startswith("done: ") and run["messages"] == []
        assert run["outline_vertices"] == 0  # the extent's outline left with the run


def test_before_after_hides_and_shows_the_last_result(probe):
    runs = section(probe, "variations")
    compare = runs["compare"]
    assert compare["enabled"] is True
    sources = [run["layers"][0]["source"] for run in runs["free"] + runs["locked"]]
    newest = max(sources, key=lambda source: Path(source).stat().st_mtime_ns)
    assert compare["layer"] == newest  # the last run's result
    assert compare["visible"] == [True, False, True]


def test_removing_runs_from_the_map_keeps_their_files(probe):
    runs = section(probe, "variations")
    keep = runs["keep"]
    sources = sorted(run["layers"][0]["source"] for run in runs["free"] + runs["locked"])
    # The History list shows the newest first: rows 1 and 2 are locked[0] and free[1].
    expected = sorted([runs["locked"][0]["layers"][0]["source"],
                       runs["free"][1]["layers"][0]["source"]])
    assert keep["removed"] == 2 and keep["removed_paths"] == expected
    for path in keep["removed_paths"]:
        assert path not in keep["sources_left"] and Path(path).is_file()
    for path in set(sources) - set(expected):
        assert path in keep["sources_left"]


def test_history_zoom_to_shows_the_entry(probe):
    gen = section(probe, "generate")
    xmin, ymin, xmax, ymax = gen["zoomed_to"]
    bx0, by0, bx1, by1 = gen["utm"]["bbox"]  # the older entry, in the canvas CRS
    assert xmin <= bx0 + 1e-6 and ymin <= by0 + 1e-6 and xmax >= bx1 - 1e-6 and ymax >= by1 - 1e-6
    assert (xmin + xmax) / 2 == pytest.approx((bx0 + bx1) / 2, abs=1e-3)
    assert (ymin + ymax) / 2 == pytest.approx((by0 + by1) / 2, abs=1e-3)
    assert xmax - xmin < 2 * (bx1 - bx0) + 1  # zoomed in, not somewhere far out


def test_layer_job_round_trips_into_the_dock(probe):
    reuse = section(probe, "reuse")
    job = reuse["job"]
    expected = {
        "prompt": job["prompt"], "negative": "", "seed": job["seed"], "steps": job["steps"],
        "guidance": job["guidance"], "scheduler": job["scheduler"], "mode": "level",
        "level": job["level"], "extent": job["bbox"], "extent_crs": job["crs"],
    }
    assert reuse["load_job"] == expected
    assert reuse["rebuilt"] == job  # the same request again
    assert reuse["regenerate"] == expected  # the layer's context-menu action
    assert reuse["regenerate_checked"] is True  # ... which opens the dock
    assert reuse["custom_action_for_layer"][0] is True  # offered on the generated layer


def job_level(job, lat):
    if job.get("level") is not None:
        return job["level"]
    if job.get("resolution") is not None:
        return level_for_resolution(job["resolution"], lat).level
    return level_for_scale(job["scale"], lat, dpi=job.get("dpi", 96)).level


def test_auto_mode_job_round_trips_to_the_same_level(probe):
    reuse = section(probe, "reuse")
    original, rebuilt = reuse["auto_job"], reuse["auto_rebuilt"]
    # The engine-settings precision goes with each job (auto, the engine's default, is left out).
    assert reuse["precisions"] == ["auto", "fp32", "bf16", "fp16"]
    assert reuse["bf16_job_precision"] == "bf16" and "precision" not in original
    bbox = original["bbox"]
    lat = latitude((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2, original["crs"])
    assert job_level(original, lat) == 17  # 1 m screen pixels at 48.8 N
    assert {k: v for k, v in rebuilt.items() if k not in ("scale", "dpi", "level")} == {
        k: v for k, v in original.items() if k not in ("scale", "dpi", "level")}
    assert job_level(rebuilt, lat) == job_level(original, lat)


# ----- 5. cancel, and an engine that does not answer --------------------------------------

def test_cancel_mid_run_leaves_no_layer_and_no_file(probe):
    cancel = section(probe, "cancel")
    assert cancel["started"] is True
    assert cancel["saw_running_step"] is True, cancel["label_at_cancel"]
    assert re.match(r"running: step \d+ of 400", cancel["label_at_cancel"])
    assert cancel["cancel_enabled"] is True
    assert cancel["finished"] is True
    assert cancel["status"] == "Cancelled: nothing was written"
    # "cancelling…" stays until the end: no engine step overwrites it; the preview goes.
    *during, last = cancel["labels_after_click"]
    assert set(during) <= {"cancelling…"}, cancel["labels_after_click"]
    assert last in ("cancelling…", "Cancelled: nothing was written")
    assert cancel["preview_before_cancel"] is True and cancel["preview_after"] is False
    assert cancel["new_layers"] == []
    assert cancel["files_after"] == cancel["files_before"]
    assert cancel["staging_after"] == []
    # The message bar says what happened, as information: a cancel is not an error.
    assert cancel["new_messages"] == [{"title": "Text2Earth", "level": 0,
                                       "text": "Cancelled: nothing was written."}]
    assert cancel["engine_states"][-1] == "cancelled"  # the engine stopped, not just the UI
    assert cancel["generate_enabled"] is True


def test_unreachable_engine_shows_a_message_and_adds_nothing(probe):
    bad = section(probe, "unreachable")
    assert bad["stop_ended_service"] is True
    assert bad["started"] and bad["finished"]
    assert bad["new_layers"] == []
    assert len(bad["new_messages"]) == 1
    message = bad["new_messages"][0]
    assert message["title"] == "Text2Earth"
    assert message["level"] == 1, bad["new_messages"]  # Qgis.MessageLevel.Warning
    assert bad["url"] in message["text"] and "not answering" in message["text"]
    assert bad["status"] == "failed: " + message["text"]
    assert bad["generate_enabled"] is True
    # The dock's 'Engine settings > Apply and reconnect' brings a local engine back.
    assert bad["apply_buttons"] == 1
    assert bad["reconnected"] is True
    assert bad["url_after_apply"] is None
    assert bad["engine_label_after_apply"].startswith("Engine: connected")


# ----- 6. Processing -------------------------------------------------------------------------

def test_processing_algorithm_writes_the_requested_geotiff(probe):
    proc = section(probe, "processing")
    assert proc["provider_after_init"] is True
    assert proc["result"]["OUTPUT"] == proc["requested"]
    assert proc["exists"] is True
    assert proc["new_layers"] == []  # processing.run loads nothing by itself
    assert proc["staging_after"] == []
    with rasterio.open(proc["requested"]) as ds:
        assert ds.crs.to_epsg() == 32632
        assert list(ds.bounds) == approx_bbox([447000, 5411000, 447400, 5411250])
        tags = ds.tags()
        lat = latitude(447200, 5411125, "EPSG:32632")
        ground = 156543.03392804097 * math.cos(math.radians(lat)) / 2**16
        assert ds.res[0] == pytest.approx(ground, rel=0.01)  # LEVEL index 6 = level 16
    assert tags["TEXT2EARTH_PROMPT"] == "a harbour with boats"
    assert tags["TEXT2EARTH_SEED"] == "7" and tags["TEXT2EARTH_LEVEL"] == "16"


# ----- 7. the screenshot -------------------------------------------------------------------

def test_screenshot_is_a_real_png_of_the_dock_and_a_layer():
    """The real QGIS desktop, made by `make screenshots` (tests/qgis_desktop_screenshot.py)."""
    data = SCREENSHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1366, 768)  # the laptop screen the dock must fit
    from PIL import Image

    with Image.open(SCREENSHOT) as image:
        image.load()  # decodes every row: a truncated file fails here
        small = image.convert("RGB").resize((width // 4, height // 4))
    assert len(set(small.getdata())) > 1000  # a map of colours and a form, not a blank window
