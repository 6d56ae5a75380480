"""The dock on a 1366 x 768 laptop screen, the first run without an engine, the up-front
size checks (judged against the engine's own grid), the extent outline and the default
output folder. The plugin runs in tests/plugin_layout_probe.py (QGIS and rasterio must not
share a process); the checks here judge its raw observations."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyproj import Transformer

from engine.errors import InputError
from engine.geo.grid import LevelRequest, build_grid

PROBE = Path(__file__).with_name("plugin_layout_probe.py")
RASTER = Path(__file__).resolve().parents[2] / "shared" / "data" / "rasters" / "RGB.byte.tif"
SCREEN_W, SCREEN_H = 1366, 768


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", T2E_RASTER=str(RASTER), HOME=str(home))
    env.pop("TEXT2EARTH_ENGINE_PYTHON", None)
    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True,
                            env=env, timeout=300, cwd=PROBE.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["home"] = str(home)
    return report


def section(report, name):
    part = report[name]
    assert "error" not in part, part["error"]
    return part


def test_every_run_button_is_on_a_1366_x_768_screen_on_both_tabs(probe):
    for tab in ("generate_tab", "edit_tab"):
        part = section(probe, tab)
        # QGIS's main window is not stretched past the screen by the dock ...
        assert part["window"] == [SCREEN_W, SCREEN_H], tab
        # ... and Generate / Edit raster and Cancel are inside it, shown.
        assert [b["text"] for b in part["buttons"]] == (
            ["Generate", "Cancel"] if tab == "generate_tab" else ["Edit raster", "Cancel"])
        for button in part["buttons"]:
            assert button["visible"] and button["inside"], (tab, button)
            x, y, w, h = button["rect"]
            assert 0 <= x and x + w <= SCREEN_W and 0 <= y and y + h <= SCREEN_H


def test_the_essential_path_shows_without_scrolling(probe):
    gen = section(probe, "generate_tab")
    assert gen["essential_in_view"] == {"prompt": True, "draw": True, "canvas": True,
                                        "mode": True}
    for part in ("progress", "preview"):
        assert gen[part]["visible"] and gen[part]["inside"], part
    assert gen["horizontal_scroll"] is False
    assert gen["advanced_collapsed"] is True  # sampling details out of the way at first
    assert gen["start_layers_collapsed"] is True  # likewise "Start from layers"
    # Small enough to sit under QGIS's menus and toolbars on a 768 px screen.
    assert gen["dock_min"][1] <= 400 and gen["dock_min"][0] <= 420


def test_variation_strip_and_start_from_layers_fit_a_1366_x_768_screen(probe):
    fit = section(probe, "variations_fit")
    assert fit["window"] == [SCREEN_W, SCREEN_H]
    for widget in fit["widgets"] + fit["with_start_layers"]:
        assert widget["visible"] and widget["inside"], widget
    assert [w["text"] for w in fit["widgets"][1:6]] == [
        "Remove unticked", "delete files too", "Hide", "Generate", "Cancel"]
    # The strip does not push the essential path out of view, and shows all three.
    assert fit["essential_in_view"] == {"prompt": True, "draw": True, "canvas": True,
                                        "mode": True}
    assert fit["thumbs_shown"] == [True, True, True]
    assert fit["start_layers_horizontal_scroll"] is False


def test_status_line_wraps_in_two_lines_and_keeps_its_text(probe):
    long = section(probe, "generate_tab")["long_status"]
    assert long["text_kept"] is True
    # Wrapped, not cut at the dock's edge; at most two lines, the rest in the tooltip.
    assert 1.5 * long["line"] < long["height"] < 3 * long["line"]


def test_advanced_section_remembers_it_was_opened(probe):
    remembered = section(probe, "advanced_remembered")
    assert remembered["open_after_reload"] is True
    # "Start from layers" too remembers it was opened, but is never on by itself.
    assert remembered["start_layers_open_after_reload"] is True
    assert remembered["start_layers_active_after_reload"] is False


def test_first_run_without_an_engine_offers_set_up_engine(probe):
    first = section(probe, "first_run")
    assert first["engine_done"] is True and first["state"] == "not found"
    assert first["action"] == "Set up engine…" and first["action_enabled"] is True
    assert first["action_inside"]["inside"] and first["action_inside"]["visible"]
    assert "Set up engine…" in first["label"] and "several GB" in first["label"]
    assert first["messages"] == []  # the bar's button says it; no warning on top
    assert first["click_opens"] == ["setup"]


def test_extent_is_an_outline_that_leaves_with_its_tab_and_the_clear_button(probe):
    gen = section(probe, "generate_tab")
    assert gen["band_fill_alpha"] == 0  # never tints the layer under it
    assert gen["band_vertices_after_choice"] == 5  # a closed rectangle
    edit = section(probe, "edit_tab")
    assert edit["band_vertices_on_edit_tab"] == 0
    assert edit["band_vertices_back"] == 5
    outline = section(probe, "outline_and_folder")
    assert outline["vertices_set"] == 5
    assert outline["vertices_cleared"] == 0 and outline["extent_cleared"] is True


def test_default_output_folder_is_never_a_temp_folder(probe):
    outline = section(probe, "outline_and_folder")
    assert outline["project_home"] == ""  # an unsaved project
    folder = Path(outline["default_folder"])
    # The user's documents (HOME is a pytest folder here), not the system's temp folder.
    assert folder == Path(probe["home"]) / "Documents" / "Text2Earth"
    assert Path(outline["temp"]) / "text2earth" != folder


def engine_size(authid, bbox, level):
    try:
        grid = build_grid(tuple(bbox), authid, LevelRequest(level=level))
    except InputError as exc:
        return str(exc)
    return [grid.width, grid.height]


@pytest.mark.parametrize("name", ["utm_block", "mercator", "geographic", "big_utm"])
def test_dock_size_estimate_is_the_engines(probe, name):
    row = section(probe, "size_checks")["rows"][name]
    assert row["planned"] == engine_size(row["authid"], row["bbox"], row["level"])
    assert row["generate_enabled"] is True
    assert row["status"] == ""


def test_tiny_output_is_flagged_before_generate(probe):
    row = section(probe, "size_checks")["rows"]["drag_2px"]
    # A 2 m drag at level 17 near 48.8 N (0.79 m pixels) is a few pixels, as the engine says.
    assert row["planned"] == engine_size(row["authid"], row["bbox"], row["level"])
    assert max(row["planned"]) < 64
    assert row["generate_enabled"] is False
    assert row["status"].startswith(f"Too small: only {row['planned'][0]} x ")
    assert row["tooltip"] == row["status"]
    assert "HTTP" not in row["status"]


def test_huge_output_is_refused_before_generate_in_map_words(probe):
    row = section(probe, "size_checks")["rows"]["country"]
    lon, lat = Transformer.from_crs(row["authid"], "EPSG:4326", always_xy=True).transform(
        550000, 5250000)
    ground = 156543.03392804097 * math.cos(math.radians(lat)) / 2**18
    # 500 km at ~0.4 m: about 1.2 million pixels a side; the engine refuses it too.
    assert row["planned"][0] == pytest.approx(500000 / ground, rel=0.01)
    assert "more than the limit" in engine_size(row["authid"], row["bbox"], row["level"])
    assert row["generate_enabled"] is False
    assert row["status"].startswith("Too large: ")
    assert "limit of 625 megapixels" in row["status"] and "coarser resolution" in row["status"]
    assert "HTTP" not in row["status"] and "max pixels" not in row["status"]


def test_no_exception_escaped_and_no_heavy_imports(probe):
    assert probe["slot_errors"] == []
    assert probe["heavy"] == []
