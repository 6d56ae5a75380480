"""The dock's "Edit raster" tab in headless QGIS: the sketch tool, the mask in the raster's CRS,
bad inputs, the result layer above its source with the source's style, and (once the engine
has edit jobs) an edit and an extension end to end through the real local service.

QGIS runs in a subprocess (tests/plugin_edit_probe.py) that never imports rasterio or pyproj;
the checks here judge its raw observations against pyproj transforms of the clicked points,
rasterio reads of the files and the numbers the probe asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mercantile
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).with_name("plugin_edit_probe.py")
RASTER = ROOT.parent / "shared" / "data" / "rasters" / "RGB.byte.tif"
XYZ_POLYGON = [(8.4012, 49.0003), (8.4028, 49.0004), (8.4026, 49.0016), (8.4011, 49.0014)]
def edit_name(prompt: str) -> str:
    """An edit's layer: the kind and prompt first, Text2Earth and 'synthetic' last."""
    return f"edit: {prompt} — Text2Earth (synthetic)"


def run_probe(work: Path, phases: str, **env) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", T2E_RASTER=str(RASTER),
               T2E_WORK=str(work), T2E_PHASES=phases, **env)
    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True,
                            env=env, timeout=500)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["slot_errors"] == []
    assert report["heavy"] == []
    # The probe ends by os._exit: no engine may outlive it (the plugin's unload stops it).
    assert report["engine"]["connect_ended"] and report["engine"]["service_ended"]
    return report


@pytest.fixture(scope="module")
def ui_report(tmp_path_factory):
    return run_probe(tmp_path_factory.mktemp("edit-ui"), "ui,processing")


@pytest.fixture
def ui(ui_report):
    assert "error" not in ui_report["ui"], ui_report["ui"]["error"]
    return ui_report["ui"]


@pytest.fixture
def proc(ui_report):
    assert "error" not in ui_report["processing"], ui_report["processing"]["error"]
    return ui_report["processing"]


def to_raster_crs(points, source="EPSG:3857"):
    transform = Transformer.from_crs(source, "EPSG:32618", always_xy=True)
    return [list(transform.transform(x, y)) for x, y in points]


def assert_ring(ring, expected, tolerance):
    """A closed ring with the expected vertices, in order."""
    assert ring[0] == ring[-1]
    assert np.allclose(np.array(ring[:-1]), np.array(expected), atol=tolerance, rtol=0)


# ----- sketching a mask, and the job it makes --------------------------------------------

def test_drawn_polygons_are_sent_in_the_rasters_crs(ui):
    assert ui["source_crs"] == "EPSG:32618" and ui["canvas_crs"] == "EPSG:3857"
    assert ui["tool_active"] is True
    assert ui["polygons_after_draw"] == 2 and ui["mask_label"] == "2 polygons drawn"
    job = ui["job"]
    assert job["type"] == "edit" and job["raster"] == str(RASTER)
    assert job["mask_crs"] == "EPSG:32618"
    assert job["mask"]["type"] == "MultiPolygon"
    first, second = ui["clicked_map"]
    polygons = job["mask"]["coordinates"]
    assert len(polygons) == 2 and all(len(p) == 1 for p in polygons)
    # Independent: pyproj takes the clicked canvas points (Web Mercator) to UTM 18N.
    assert_ring(polygons[0][0], to_raster_crs(first), 0.01)
    # Closed by a double click on its third vertex: three vertices, none doubled.
    assert_ring(polygons[1][0], to_raster_crs(second), 0.01)
    # The sketch is in the middle of the raster, a few km across (300 m pixels).
    with rasterio.open(RASTER) as ds:
        bounds = ds.bounds
    for ring in (polygons[0][0], polygons[1][0]):
        for x, y in ring:
            assert bounds.left < x < bounds.right and bounds.bottom < y < bounds.top
    assert job["prompt"] == "a park with trees" and job["seed"] == 11 and job["steps"] == 3
    assert job["level"] is None  # auto: from the raster's resolution
    assert (job["dilate"], job["feather"], job["fill_nodata"]) == (4, 4, False)
    assert Path(ui["destination"]).name == "RGB.byte_edited_a-park-with-trees_s11.tif"
    assert ui["band_polygons"] == 2  # both outlines stay on the map


def test_backspace_and_escape_while_drawing(ui):
    assert ui["ring_after_backspace"] == 2
    assert ui["ring_after_escape"] == 0
    assert ui["polygons_after_escape"] == 2  # Esc drops the open ring only
    assert ui["polygons_after_clear"] == 0  # ... and with none open, every polygon
    assert ui["draw_checked_after_other_tool"] is False


def test_selected_features_are_transformed_from_their_layer_crs(ui):
    assert ui["no_selection_messages"] == [
        "no features of 'fields' are selected: select the polygons to regenerate, or draw them"]
    job = ui["selected_job"]
    assert job["mask_crs"] == "EPSG:32618"
    (polygon,) = job["mask"]["coordinates"]  # only the selected one of two features
    assert_ring(polygon[0], to_raster_crs(ui["selected_lonlat"], "EPSG:4326"), 0.01)


def test_extend_job_and_buttons(ui):
    job = ui["extend_job"]
    assert job["type"] == "extend" and job["side"] == "east" and job["by"] == 250.0
    assert job["raster"] == str(RASTER) and "mask" not in job
    assert Path(ui["extend_destination"]).name == (
        "RGB.byte_extended_east_250m_a-park-with-trees_s11.tif")
    assert ui["buttons_asked"] == ["north", "south", "east", "west", "all"]


def test_bad_inputs_give_their_message_and_start_nothing(ui):
    assert len(ui["no_mask_messages"]) == 1
    assert ui["no_mask_messages"][0].startswith("no mask: draw polygons on the map")
    assert ui["no_mask_task"] is False
    assert ui["zero_distance_messages"] == [
        "the distance to extend by must be more than 0 m (got 0 m)"]
    assert ui["zero_distance_task"] is False
    assert ui["no_crs_messages"] == [
        "the raster layer has no CRS: set it (Layer Properties > Source) first"]
    assert ui["xyz_valid"] is True
    # An XYZ layer is rendered for the polygons' area, not refused: here its service (a port
    # nobody listens on) gives nothing, which is said in one line, and nothing starts.
    assert len(ui["xyz_messages"]) == 1
    assert ui["xyz_messages"][0].startswith(("QGIS could not render 'tiles' to a GeoTIFF",
                                             "no mask: draw polygons on the map")), (
        ui["xyz_messages"][0])
    assert "HTTP" not in ui["xyz_messages"][0]


# ----- the result layer (a fake result: a copy of the source) --------------------------------

def test_result_is_added_just_above_its_source_with_its_style(ui):
    assert ui["new_layers"] == [edit_name("a park with trees")]
    assert ui["result_tree"] == {
        "group": "Imagery",
        "names": ["above", edit_name("a park with trees"), "source ortho", "below"]}
    expected = {"type": "multibandcolor", "opacity": pytest.approx(0.6),
                "bands": [3, 2, 1], "stretch": [[10, 200], [20, 180], [30, 160]]}
    assert ui["source_style"] == expected
    assert ui["result_style"] == expected
    assert ui["source_style_after"] == expected  # the source layer is untouched
    assert ui["layer_added_signal"] == [True]
    assert ui["result_abstract"].startswith("Partly SYNTHETIC")
    assert "prompt: a park with trees" in ui["result_abstract"].splitlines()
    assert ui["result_job"] == ui["job"]
    assert ui["status"] == f"done: {ui['result_source']}"
    assert ui["buttons_enabled"] == [True, False]


def test_edits_go_to_the_history_and_come_back_to_the_edit_tab(ui):
    assert ui["history"][0].startswith("edit: a park with trees\nseed 11, level 12")
    assert ui["reused_prompt"] == "a park with trees"
    assert ui["reused_form_is_the_runs"] is True  # Reuse settings: the inverse of the run
    assert ui["reused_tab"] is True


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in the 8 directions (a square structuring element)."""
    out = mask.copy()
    for _ in range(pixels):
        padded = np.pad(out, 1)
        out = np.zeros_like(out)
        for dy in range(3):
            for dx in range(3):
                out |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


# ----- the Processing algorithm -------------------------------------------------------------

def test_processing_algorithm_sends_the_selected_features_in_the_rasters_crs(proc):
    (sent,) = [s for s in proc["sent"] if s["destination"].endswith("processing.tif")]
    assert proc["result"] == {"OUTPUT": sent["destination"]}
    job = sent["job"]
    assert job["type"] == "edit" and job["raster"] == str(RASTER)
    assert job["mask_crs"] == "EPSG:32618" and job["level"] == 12  # choice 3: auto, 10, 11, 12
    assert (job["prompt"], job["seed"], job["steps"], job["dilate"]) == ("a lake", 3, 2, 4)
    assert (job["feather"], job["fill_nodata"], job["guidance"]) == (4, False, 3.5)
    (polygon,) = job["mask"]["coordinates"]  # the selected one only
    assert_ring(polygon[0], to_raster_crs(proc["selected_lonlat"], "EPSG:4326"), 0.01)


def test_processing_algorithm_refuses_bad_inputs_before_the_engine(proc):
    assert proc["sent_count"] == 1
    # An XYZ layer is rendered first: here its service is down, said in a user's words.
    down = "QGIS could not render 'tiles for processing' to a GeoTIFF: is its service reachable"
    assert any(e.startswith(down) for e in proc["xyz_errors"]), proc["xyz_errors"]
    assert any(e.startswith("no mask: ") for e in proc["empty_errors"]), proc["empty_errors"]
    assert any("must be a GeoTIFF" in e for e in proc["png_errors"]), proc["png_errors"]


# ----- end to end through the local service ----------------------------------------------

def rejects_edit_jobs(error: str | None) -> bool:
    """The service before issue 7's engine: a 422 on the job's type, nothing else."""
    return bool(error) and "(HTTP 422)" in error and (
        "unknown job type" in error.lower() or re.search(r"(^|; )type: ", error) is not None)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, tiny_t2i, tiny_inpaint):
    work = tmp_path_factory.mktemp("edit-e2e")
    small = work / "rgb_small.tif"
    with rasterio.open(RASTER) as src:
        window = Window(330, 300, 64, 48)
        profile = {**src.profile, "width": 64, "height": 48, "blockysize": 16,
                   "transform": src.window_transform(window)}
        with rasterio.open(small, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.colorinterp = src.colorinterp
    report = run_probe(work, "e2e", T2E_MODEL=str(tiny_t2i),
                       T2E_INPAINT_MODEL=str(tiny_inpaint), T2E_SMALL_RASTER=str(small))
    assert report["engine"]["state"] == "connected"
    section = report["e2e"]
    assert "error" not in section, section["error"]
    if rejects_edit_jobs(section["edit"]["error"]):
        pytest.skip("the engine has no edit jobs yet: " + section["edit"]["error"][:200])
    section["small"] = str(small)
    return section


def test_editing_a_layer_with_a_drawn_polygon_end_to_end(e2e):
    run = e2e["edit"]
    assert run["started"] and run["finished"], run["labels"]
    assert run["messages"] == [] and run["error"] == "", run["error"]
    assert run["status"] == f"done: {run['path']}"
    assert run["new_layers"] == [edit_name("a green park with trees")]
    names = run["source_tree"]["names"]
    assert run["tree"] == run["source_tree"]
    assert names.index(run["new_layers"][0]) == names.index("ortho to edit") - 1
    assert run["style"] == e2e["source_style"] == e2e["source_style_after"]
    assert e2e["source_sha256_after"] == e2e["source_sha256_before"] == hashlib.sha256(
        RASTER.read_bytes()).hexdigest()
    job = run["job"]
    (polygon,) = job["mask"]["coordinates"]
    assert_ring(polygon[0], to_raster_crs(e2e["clicked_map"]), 0.01)
    with rasterio.open(RASTER) as src, rasterio.open(run["path"]) as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height, out.count) == (src.width, src.height, src.count)
        assert out.dtypes == src.dtypes and out.nodata == src.nodata
        assert out.colorinterp == src.colorinterp
        before, after = src.read(), out.read()
        inside = rasterize([job["mask"]], out_shape=(src.height, src.width),
                           transform=src.transform).astype(bool)
        touched = rasterize([job["mask"]], out_shape=(src.height, src.width),
                            transform=src.transform, all_touched=True).astype(bool)
    # Outside the mask grown by more than its dilation: bit-identical.
    grown = grow(touched, job["dilate"] + 1)
    assert inside.sum() > 20
    assert np.array_equal(before[:, ~grown], after[:, ~grown])
    assert (before[:, inside] != after[:, inside]).any()


def test_polygons_and_sketch_tool_leave_the_map_after_an_edit(e2e):
    assert e2e["tool_before_run"] is True
    assert e2e["polygons_after_run"] == 0
    assert e2e["tool_after_run"] is False and e2e["draw_checked_after_run"] is False


def test_extending_a_layer_east_end_to_end(e2e):
    run = e2e["extend"]
    assert run["finished"] and run["error"] == "", run["error"]
    assert run["new_layers"] == [
        "extend: a green park with trees — Text2Earth (synthetic)"]
    assert run["style"] == e2e["small_style"]
    names = run["source_tree"]["names"]
    assert names.index(run["new_layers"][0]) == names.index("small ortho") - 1
    assert run["job"]["raster"] == e2e["small"]
    with rasterio.open(e2e["small"]) as src, rasterio.open(run["path"]) as out:
        assert out.crs == src.crs and out.res == pytest.approx(src.res)
        assert out.bounds.left == pytest.approx(src.bounds.left)
        assert out.bounds.top == pytest.approx(src.bounds.top)
        assert out.height == src.height and out.width > src.width
        assert out.bounds.right - src.bounds.right >= 3000 - src.res[0]
        overlap = out.read(window=((0, src.height), (0, src.width)))
        assert np.array_equal(overlap, src.read())


def xyz_colour(lon, lat, z):
    tile = mercantile.tile(lon, lat, z)
    return [(tile.x * 37) % 256, (tile.y * 59) % 256, 40 + z * 10]


def test_an_xyz_layer_is_rendered_at_the_level_and_edited(e2e):
    xyz = e2e["xyz"]
    assert xyz["valid"] is True
    assert xyz["scale_label"].startswith("a WMS layer, not a file: the area around the "
                                         "polygons is rendered at level 17")
    assert xyz["finished"] and xyz["error"] == "", (xyz["error"], xyz["messages"])
    assert xyz["new_layers"] == [edit_name("a green park with trees")]
    rendered = Path(xyz["job"]["raster"])
    assert rendered.name == "local-tiles_rendered_L17.tif"
    assert rendered.name in xyz["rendered_files"] and rendered.parent.name == "out"
    to_lonlat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    with rasterio.open(rendered) as src:
        # Level 17's own pixel: the XYZ tiles' at zoom 17, so their pixels are copied 1:1.
        assert src.crs.to_epsg() == 3857
        assert src.res == pytest.approx((156543.03392804097 / 2**17,) * 2, rel=1e-9)
        assert src.count == 4 and src.dtypes[0] == "uint8"
        pixels = src.read()
        checked = 0
        for row in range(5, src.height, 37):
            for col in range(5, src.width, 41):
                lon, lat = to_lonlat.transform(*src.xy(row, col))
                assert list(pixels[:3, row, col]) == xyz_colour(lon, lat, 17), (row, col)
                assert pixels[3, row, col] == 255
                checked += 1
        assert checked > 20
        # The polygon with context around it, inside the rendered area.
        west, south = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(
            8.4011, 49.0003)
        assert src.bounds.left < west and src.bounds.bottom < south
    with rasterio.open(rendered) as src, rasterio.open(xyz["path"]) as out:
        assert out.crs == src.crs and out.transform == src.transform
        mask = rasterize([xyz["job"]["mask"]], out_shape=(src.height, src.width),
                         transform=src.transform, all_touched=True).astype(bool)
        grown = grow(mask, xyz["job"]["dilate"] + 1)
        assert np.array_equal(src.read()[:, ~grown], out.read()[:, ~grown])


def test_processing_edits_an_xyz_layer_rendered_at_its_finest_level(e2e):
    run = e2e["processing_xyz"]
    assert run["valid"] is True and run["errors"] == [], run["errors"]
    out = Path(run["result"]["OUTPUT"])
    assert out.name == "xyz_edited.tif"
    # The source rendered next to the output, at zmax 17 (LEVEL auto), then edited.
    assert run["files"] == ["tiles-for-processing_rendered_L17.tif", "xyz_edited.tif"]
    rendered = out.with_name("tiles-for-processing_rendered_L17.tif")
    to_lonlat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    with rasterio.open(rendered) as src, rasterio.open(out) as edited:
        assert src.crs.to_epsg() == 3857 == edited.crs.to_epsg()
        assert src.res == pytest.approx((156543.03392804097 / 2**17,) * 2, rel=1e-9)
        assert edited.transform == src.transform and edited.count == src.count == 4
        before, after = src.read(), edited.read()
        polygon = {"type": "Polygon", "coordinates": [[
            Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(*p)
            for p in [*XYZ_POLYGON, XYZ_POLYGON[0]]]]}
        mask = rasterize([polygon], out_shape=(src.height, src.width),
                         transform=src.transform, all_touched=True).astype(bool)
        inside = rasterize([polygon], out_shape=(src.height, src.width),
                           transform=src.transform).astype(bool)
        grown = grow(mask, 4 + 1)
        # Outside the (grown) polygon: the tiles' own colours, unchanged by the edit.
        checked = 0
        for row in range(3, src.height, 29):
            for col in range(3, src.width, 31):
                if grown[row, col]:
                    continue
                lon, lat = to_lonlat.transform(*src.xy(row, col))
                assert list(after[:3, row, col]) == xyz_colour(lon, lat, 17), (row, col)
                checked += 1
        assert checked > 20
        assert np.array_equal(before[:, ~grown], after[:, ~grown])
        assert inside.sum() > 100 and (before[:3, inside] != after[:3, inside]).any()


def test_cancelling_an_edit_leaves_no_layer_and_no_file(e2e):
    cancel = e2e["cancel"]
    assert cancel["saw_running"] is True, cancel["label_at_cancel"]
    assert re.match(r"running: step \d+ of 400", cancel["label_at_cancel"])
    assert cancel["cancel_enabled"] is True and cancel["finished"] is True
    assert cancel["status"] == "Cancelled: nothing was written"
    assert cancel["new_layers"] == [] and cancel["files_added"] == []
    assert [(m["text"], m["level"]) for m in cancel["messages"]] == [
        ("Cancelled: nothing was written.", 0)]  # information, not an error
    assert cancel["run_enabled"] is True
