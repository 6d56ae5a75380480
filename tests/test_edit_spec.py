"""The edit/extend job bodies the plugin sends (contract: docs of issue 7) and the messages for
bad inputs. Plain pytest: core/edit_spec.py is stdlib only."""

from __future__ import annotations

from pathlib import Path

import pytest

from text2earth_qgis.core.edit_spec import (
    EditOptions,
    build_edit_job,
    build_extend_job,
    edit_output_name,
    extend_output_name,
    mask_geometry,
    raster_file,
    unused_name,
)
from text2earth_qgis.core.result_names import job_result_name

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
PARK = EditOptions("a park")
TRIANGLE = {"type": "Polygon", "coordinates": [[[20, 0], [30, 0], [25, 5], [20, 0]]]}
# Every field of the engine's EditJob/ExtendJob; the plugin sends nothing else (extra="forbid").
EDIT_FIELDS = {"type", "raster", "mask", "mask_crs", "prompt", "negative_prompt", "level",
               "seed", "steps", "guidance", "scheduler", "out", "overwrite", "model", "bands",
               "dilate", "feather", "fill_nodata", "tile", "overlap"}
EXTEND_FIELDS = {"type", "raster", "by", "side", "prompt", "negative_prompt", "level", "seed",
                 "steps", "guidance", "scheduler", "out", "overwrite", "model", "bands", "tile",
                 "overlap"}


@pytest.fixture
def tif(tmp_path):
    path = tmp_path / "ortho.tif"
    path.write_bytes(b"II*\x00")
    return str(path)


def test_edit_job_body_matches_the_contract(tif):
    job = build_edit_job(tif, [SQUARE, TRIANGLE], "EPSG:32632", EditOptions(
        "  a park with trees ", negative_prompt="", level=None, seed=7, steps=20,
        model="/m/inpaint"), dilate=3, feather=0, fill_nodata=True)
    assert job == {
        "type": "edit", "raster": tif, "prompt": "a park with trees", "negative_prompt": None,
        "level": None, "seed": 7, "steps": 20, "guidance": 3.5, "scheduler": "euler",
        "out": None, "model": "/m/inpaint", "mask_crs": "EPSG:32632", "dilate": 3,
        "feather": 0, "fill_nodata": True,
        "mask": {"type": "MultiPolygon", "coordinates": [SQUARE["coordinates"],
                                                         TRIANGLE["coordinates"]]},
    }
    assert set(job) <= EDIT_FIELDS
    # Strict types on the service side: ints are ints, floats floats, bools bools.
    assert type(job["dilate"]) is int and type(job["guidance"]) is float
    assert type(job["fill_nodata"]) is bool


def test_edit_defaults_are_the_engines(tif):
    job = build_edit_job(tif, [SQUARE], "EPSG:3857", EditOptions("a lake", level=16))
    assert (job["dilate"], job["feather"], job["fill_nodata"]) == (4, 4, False)
    assert job["guidance"] == 3.5 and job["level"] == 16 and "model" not in job


def test_multipolygons_are_merged_into_one_mask():
    multi = {"type": "MultiPolygon", "coordinates": [SQUARE["coordinates"],
                                                     TRIANGLE["coordinates"]]}
    assert mask_geometry([multi, SQUARE])["coordinates"] == [
        SQUARE["coordinates"], TRIANGLE["coordinates"], SQUARE["coordinates"]]


def test_extend_job_body_matches_the_contract(tif):
    job = build_extend_job(tif, 500, "east", EditOptions("farmland", seed=3, steps=4,
                                                         level=17))
    assert job == {
        "type": "extend", "raster": tif, "by": 500.0, "side": "east", "prompt": "farmland",
        "negative_prompt": None, "level": 17, "seed": 3, "steps": 4, "guidance": 3.5,
        "scheduler": "euler", "out": None,
    }
    assert set(job) <= EXTEND_FIELDS and type(job["by"]) is float


@pytest.mark.parametrize("side", ["north", "south", "east", "west", "all"])
def test_every_side_is_accepted(tif, side):
    assert build_extend_job(tif, 1.5, side, EditOptions("sea"))["side"] == side


@pytest.mark.parametrize("by", [0, -10.0, float("nan")])
def test_distance_must_be_positive(tif, by):
    with pytest.raises(ValueError, match="more than 0 m"):
        build_extend_job(tif, by, "east", EditOptions("sea"))


@pytest.mark.parametrize("side", ["up", "East", "", "northeast"])
def test_side_must_be_one_of_five(tif, side):
    with pytest.raises(ValueError, match="not one of north, south, east, west, all"):
        build_extend_job(tif, 100, side, EditOptions("sea"))


def test_no_raster_layer():
    with pytest.raises(ValueError, match="choose the raster layer to edit"):
        raster_file(None, None)


@pytest.mark.parametrize("provider, source", [
    ("wms", "crs=EPSG:3857&type=xyz&url=https://tile.example/{z}/{x}/{y}.png"),
    ("memory", "memory://raster"),
])
def test_a_served_layer_must_be_exported_first(provider, source):
    with pytest.raises(ValueError, match=f"{provider!r} provider, not a local file: export it "
                       "to GeoTIFF first"):
        raster_file(provider, source)


def test_a_gdal_layer_that_is_not_a_file_must_be_exported_first(tmp_path):
    with pytest.raises(ValueError, match="is not a local file: export it to GeoTIFF first"):
        raster_file("gdal", "/vsicurl/https://example.com/cog.tif")
    with pytest.raises(ValueError, match="is not a local file"):
        raster_file("gdal", str(tmp_path))  # a folder


def test_a_local_file_is_its_absolute_path_without_options(tif, monkeypatch):
    assert raster_file("gdal", tif) == tif
    assert raster_file("gdal", tif + "|option:value") == tif
    monkeypatch.chdir(Path(tif).parent)
    assert raster_file("gdal", "ortho.tif") == tif  # the service wants absolute paths


def test_no_polygons_drawn_and_no_selected_features(tif):
    with pytest.raises(ValueError, match="no mask: draw polygons on the map, or select "
                       "features of a polygon layer"):
        build_edit_job(tif, [], "EPSG:32632", PARK)
    degenerate = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}
    with pytest.raises(ValueError, match="no mask"):
        build_edit_job(tif, [degenerate], "EPSG:32632", PARK)


def test_lines_and_points_are_not_a_mask(tif):
    line = {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}
    with pytest.raises(ValueError, match="must be polygons, not LineString"):
        build_edit_job(tif, [SQUARE, line], "EPSG:32632", PARK)


def test_empty_prompt_and_unknown_crs_and_negative_pixels(tif):
    with pytest.raises(ValueError, match="type a prompt"):
        build_edit_job(tif, [SQUARE], "EPSG:32632", EditOptions("   "))
    with pytest.raises(ValueError, match="type a prompt"):
        build_extend_job(tif, 10, "all", EditOptions(""))
    with pytest.raises(ValueError, match="the raster layer has no CRS"):
        build_edit_job(tif, [SQUARE], "", PARK)
    with pytest.raises(ValueError, match="pixel counts from 0 to 64"):
        build_edit_job(tif, [SQUARE], "EPSG:32632", PARK, dilate=-1)
    with pytest.raises(ValueError, match="pixel counts from 0 to 64"):
        build_edit_job(tif, [SQUARE], "EPSG:32632", PARK, feather=65)
    assert build_edit_job(tif, [SQUARE], "EPSG:32632", PARK, dilate=64)["dilate"] == 64


def test_output_names():
    assert edit_output_name("/data/RGB.byte.tif", "Replace the lot: a park!", 12) == (
        "RGB.byte_edited_replace-the-lot-a-park_s12.tif")
    assert extend_output_name("/d/scene.tiff", "east", 500.0, "farmland", None) == (
        "scene_extended_east_500m_farmland_srandom.tif")
    assert extend_output_name("/d/x.tif", "all", 12.5, "sea", 1) == (
        "x_extended_all_12.5m_sea_s1.tif")


def test_unused_name_counts_up():
    taken = {"a.tif", "a_2.tif"}
    assert unused_name("b.tif", taken.__contains__) == "b.tif"
    assert unused_name("a.tif", taken.__contains__) == "a_3.tif"


def test_result_layer_names_say_synthetic():
    edit = build_edit_job("/d/x.tif", [SQUARE], "EPSG:32632", EditOptions("a  park"))
    assert job_result_name(edit) == "edit: a park — Text2Earth (synthetic)"
    extend = build_extend_job("/d/x.tif", 100.0, "east", EditOptions("sea"))
    assert job_result_name(extend) == "extend: sea — Text2Earth (synthetic)"
