"""The dock's N variations (one job, thumbnails best first, keep some), the Git-RSCLIP score in
layer metadata and history, examples by level, the cascade scene method and "Start from
layers". The plugin runs in tests/plugin_variations_probe.py against tests/fake_service.py
(QGIS and rasterio must not share a process); the checks here judge its observations against
independent references: the scores the fake engine was given, rasterio for the files, pyproj
for where the lon/lat layer lands, the engine's own grid for the size, and QGIS's own
rendering of the extent for the picture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from pyproj import Transformer

from engine.geo.grid import LevelRequest, build_grid

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).with_name("plugin_variations_probe.py")
BBOX = [447000.0, 5411000.0, 447300.0, 5411250.0]
SCORES = {1: 0.41, 2: 0.87, 3: 0.63}  # what the probe's fake engine scores candidate K
COLOURS = {1: (200, 60, 60), 2: (60, 200, 60), 3: (60, 60, 200)}
RED_UTM = (447040.0, 5411060.0, 447120.0, 5411140.0)
BLUE_LONLAT = (8.2803, 48.8512, 8.2810, 48.8517)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    work = tmp_path_factory.mktemp("variations")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", T2E_WORK=str(work))
    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True,
                            env=env, timeout=300, cwd=PROBE.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["work"] = str(work)
    return report


def section(report, name):
    part = report[name]
    assert "error" not in part, part["error"]
    return part


def seed_of(index: int, job_seed: int = 100) -> int:
    return job_seed + (index - 1) * 1000  # the fake engine's candidate seeds


def test_n_variations_are_one_job_and_n_layers_best_first(probe):
    run = section(probe, "variations")
    assert run["started"] and run["finished"] and run["messages"] == []
    (sent,) = run["sent"]  # one job, not three
    assert sent["candidates"] == 3 and sent["keep_candidates"] is True
    best_first = sorted(SCORES, key=SCORES.get, reverse=True)  # 2, 3, 1
    seeds = [seed_of(k) for k in best_first]
    # The strip: thumbnails in the engine's order, with seed and score; all kept at first.
    assert [item["text"] for item in run["strip"]] == [
        f"{SCORES[k]:.2f}" for k in best_first]
    for rank, (item, k, seed) in enumerate(zip(run["strip"], best_first, seeds, strict=True),
                                           start=1):
        assert item["tooltip"].startswith(f"variation {rank}, seed {seed}\n")
        assert f"match {SCORES[k]:.2f}: how well the image matches the prompt" in \
            item["tooltip"]
    assert all(item["checked"] and item["icon"] for item in run["strip"])
    assert run["strip_visible"] is True
    assert "Git-RSCLIP" in run["strip"][0]["tooltip"]
    # One layer per variation, its own file (named with its own seed), its own pixels.
    layers = {layer["id"]: layer for layer in run["new_layers"]}
    assert len(layers) == 3
    for rank, (item, k) in enumerate(zip(run["strip"], best_first, strict=True), start=1):
        layer = layers[item["layer"]]
        # What differs first: the rank, before the prompt and Text2Earth.
        assert layer["name"] == (
            f"{rank} of 3, scene: a village among fields — Text2Earth (synthetic)")
        assert layer["job"]["seed"] == seed_of(k) and "candidates" not in layer["job"]
        assert f"Prompt match (Git-RSCLIP score, 0 to 1): {SCORES[k]:.3f}" in \
            layer["abstract"].splitlines()
        path = Path(layer["source"])
        assert path.parent == Path(probe["work"]) / "out"
        assert path.name.endswith(f"_s{seed_of(k)}.tif")
        if path.exists():
            with rasterio.open(path) as ds:
                assert tuple(int(ds.read(b)[0, 0]) for b in (1, 2, 3)) == COLOURS[k]
    # The best is on top of the group, and Before/after compares the best.
    assert run["group_order"] == [layers[item["layer"]]["source"] for item in run["strip"]]
    assert run["compare_layer"] == run["strip"][0]["layer"]
    # History: one entry per variation, with its score and its own thumbnail.
    assert len(run["history_thumbs"]) == 3 and all(n > 0 for n in run["history_thumbs"])
    assert run["history_thumb_pngs"] == 3
    for k in best_first:
        assert any(f"seed {seed_of(k)}, level 16, match {SCORES[k]:.2f}" in line
                   for line in run["history"])


def test_unticked_variations_leave_the_map_and_their_files_only_when_asked(probe):
    run = section(probe, "variations")
    ids = [item["layer"] for item in run["strip"]]
    sources = {item["layer"]: Path(next(layer["source"] for layer in run["new_layers"]
                                        if layer["id"] == item["layer"]))
               for item in run["strip"]}
    first, second = run["first_removal"], run["second_removal"]
    assert first["removed"] == [ids[2]] and first["deleted"] == []
    assert ids[2] not in first["layers_left"] and sources[ids[2]].is_file()  # file kept
    assert first["strip_count"] == 2 and first["strip_visible"] is True
    assert second["removed"] == [ids[1]] and second["deleted"] == [str(sources[ids[1]])]
    assert not sources[ids[1]].exists()  # asked for: deleted
    assert second["layers_left"] == [ids[0]] and sources[ids[0]].is_file()
    assert second["strip_visible"] is False  # one left: nothing to choose from


def test_one_variation_sends_the_same_job_as_before_and_shows_its_score(probe):
    run = section(probe, "single")
    (sent,) = run["sent"]
    assert not {"candidates", "keep_candidates", "init_raster", "strength",
                "scene_method"} & set(sent)
    (layer,) = run["new_layers"]
    assert layer["name"] == "scene: a single farm — Text2Earth (synthetic)"
    assert "Prompt match (Git-RSCLIP score, 0 to 1): 0.700" in layer["abstract"].splitlines()
    assert run["history"][0].startswith("scene: a single farm\nseed 7, level 16, match 0.70, ")
    assert run["strip_visible"] is False


def test_without_scores_the_strip_shows_ranks_in_generation_order(probe):
    part = section(probe, "unscored_and_older")
    run = part["unscored"]
    assert not [m for m in run["messages"] if "could not be delivered" in m]
    assert [item["text"] for item in part["unscored_strip"]] == ["#1", "#2"]
    assert part["unscored_strip"][0]["tooltip"].startswith("variation 1, seed 5\n")
    assert "not scored" in part["unscored_strip"][0]["tooltip"]
    assert all("Prompt match" not in layer["abstract"] for layer in run["new_layers"])
    assert all("match" not in line for line in run["history"][:2])


def test_an_older_engine_says_what_it_cannot_do_and_adds_nothing(probe):
    older = section(probe, "unscored_and_older")["older"]
    assert older["started"] and older["finished"] and older["new_layers"] == []
    (message,) = [m for m in older["messages"] if m.startswith("This engine")]
    assert message.startswith("This engine is older than the plugin: it cannot do several "
                              "variations in one run yet.")
    assert "choose 1 variation" in message and "HTTP" not in message
    assert section(probe, "unscored_and_older")["older_status"] == "failed: " + message


def test_cascade_scene_method_is_offered_sent_and_reloaded(probe):
    run = section(probe, "scene_method")
    assert run["choices"] == ["auto", "outpaint", "joint", "cascade"]
    assert run["sent"][0]["scene_method"] == "cascade"
    assert run["reloaded"] == "cascade"


def test_examples_follow_the_level(probe):
    part = section(probe, "examples")
    library = json.loads((ROOT / "resources" / "prompt_library.json").read_text())["levels"]
    general = [line.strip() for line in
               (ROOT / "resources" / "example_prompts.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for level, shown in part["rows"].items():
        written = [p["text"] for p in library.get(level, [])]
        assert shown == (written or general), level
    assert part["rows"]["17"] != part["rows"]["12"] or not library.get("17")
    assert part["picked"] == part["rows"]["12"][0]


# ----- Start from layers --------------------------------------------------------------------

def test_start_from_layers_lists_visible_layers_and_starts_off(probe):
    part = section(probe, "start_layers")
    assert part["collapsed_at_first"] is True and part["active_at_first"] is False
    assert part["default_strength"] == pytest.approx(0.6)
    assert {"land use (red)", "lake (blue, lon/lat)"} <= set(part["listed"])
    assert "hidden layer" not in part["listed"]
    refused = part["nothing_ticked"]
    assert refused["started"] is False and refused["sent"] == []
    assert "tick at least one layer to start from" in refused["messages"]


def test_start_from_layers_sends_the_rendered_layers_and_the_strength(probe):
    part = section(probe, "start_layers")
    (sent,) = part["sent"]
    init = Path(sent["init_raster"])
    assert init.is_absolute() and init.is_file()
    assert init.parent == Path(probe["work"]) / "out" and init.name.endswith(".start.tif")
    assert sent["strength"] == 0.35
    assert not [p for p in init.parent.iterdir() if ".part" in p.name]  # no temp file left


def test_a_refused_start_from_layers_run_leaves_no_picture_behind(probe):
    refused = section(probe, "start_layers")["refused_by_older"]
    (init,) = refused["sent_init"]
    assert init.endswith(".start.tif")  # it was drawn and sent ...
    assert refused["start_files_after"] == []  # ... and removed when the engine refused


def test_rendered_layers_sit_on_the_output_grid_of_the_extent(probe):
    part = section(probe, "start_layers")
    grid = build_grid(tuple(BBOX), "EPSG:32632", LevelRequest(level=17))
    assert part["planned"] == [grid.width, grid.height]
    with rasterio.open(part["sent"][0]["init_raster"]) as ds:
        assert ds.crs.to_epsg() == 32632 and ds.count == 3
        assert (ds.width, ds.height) == (grid.width, grid.height)
        transform = ds.transform
        # GDAL (QGIS's) reads the very same georeferencing.
        assert list(transform.to_gdal()) == pytest.approx(part["gdal"]["geotransform"],
                                                          abs=1e-9)
        pixels = ds.read()
    # Square pixels covering the extent, at most a pixel wider on one side, centred.
    assert transform.a == pytest.approx(-transform.e, rel=1e-9)
    left, bottom, right, top = (transform.c, transform.f + transform.e * ds.height,
                                transform.c + transform.a * ds.width, transform.f)
    for edge, want in zip((left, bottom, right, top), BBOX, strict=True):
        assert abs(edge - want) <= transform.a
    assert (left + right) / 2 == pytest.approx(447150.0, abs=1e-6)
    assert (bottom + top) / 2 == pytest.approx(5411125.0, abs=1e-6)

    def colour_at(x, y):
        col, row = ~transform * (x, y)
        return tuple(int(v) for v in pixels[:, int(row), int(col)])

    # The red square in the extent's CRS, where its coordinates say.
    cx, cy = (RED_UTM[0] + RED_UTM[2]) / 2, (RED_UTM[1] + RED_UTM[3]) / 2
    assert colour_at(cx, cy) == (255, 0, 0)
    assert colour_at(RED_UTM[0] - 3, cy) == (255, 255, 255)  # just outside: the blank sheet
    assert colour_at(RED_UTM[2] + 3, cy) == (255, 255, 255)
    red = np.all(pixels.transpose(1, 2, 0) == (255, 0, 0), axis=2).sum()
    area_px = (RED_UTM[2] - RED_UTM[0]) * (RED_UTM[3] - RED_UTM[1]) / transform.a ** 2
    assert red == pytest.approx(area_px, rel=0.05)
    # The blue square drawn in lon/lat lands where pyproj projects it.
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    bx, by = to_utm.transform((BLUE_LONLAT[0] + BLUE_LONLAT[2]) / 2,
                              (BLUE_LONLAT[1] + BLUE_LONLAT[3]) / 2)
    assert colour_at(bx, by) == (0, 0, 255)
    assert colour_at(*to_utm.transform(BLUE_LONLAT[0], BLUE_LONLAT[1])) != (255, 0, 0)


def test_rendered_layers_are_what_qgis_draws_for_the_extent(probe):
    part = section(probe, "start_layers")
    assert part["reference_saved"] is True
    with rasterio.open(part["sent"][0]["init_raster"]) as ds:
        ours = ds.read().transpose(1, 2, 0).astype(int)
    with Image.open(part["reference"]) as image:
        reference = np.asarray(image.convert("RGB")).astype(int)
    assert ours.shape == reference.shape
    difference = np.abs(ours - reference)
    # Same renderer, same settings: identical but for antialiased edge pixels.
    assert (difference.max(axis=2) > 2).mean() < 0.002, difference.max()
    assert part["reference_extent"] == pytest.approx(
        [part["gdal"]["geotransform"][0],
         part["gdal"]["geotransform"][3] + part["gdal"]["geotransform"][5] * ours.shape[0],
         part["gdal"]["geotransform"][0] + part["gdal"]["geotransform"][1] * ours.shape[1],
         part["gdal"]["geotransform"][3]], abs=1e-6)


def test_no_exception_escaped_and_no_heavy_imports(probe):
    assert probe["slot_errors"] == []
    assert probe["heavy"] == []
