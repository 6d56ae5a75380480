"""The stdlib core behind "Start from layers", the scene method and the examples by level:
the job fields against the contracts' ranges, the rendered file's names, and which examples
a level gets (the library's, else the general list), without Qt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from text2earth_qgis.core.init_image import (
    DEFAULT_STRENGTH,
    init_fields,
    init_image_name,
    temp_name,
)
from text2earth_qgis.core.job_spec import SCENE_METHODS, Extent, Resolution, build_job
from text2earth_qgis.core.prompt_examples import examples_for, general_examples

EXTENT = Extent(447000, 5411000, 447300, 5411300, "EPSG:32632")


def test_init_fields_carry_an_absolute_path_and_a_strength_in_0_1(tmp_path):
    raster = tmp_path / "scene.start.tif"
    assert init_fields(raster, 0.35) == {"init_raster": str(raster), "strength": 0.35}
    assert init_fields(raster, 0) == {"init_raster": str(raster), "strength": 0.0}
    assert DEFAULT_STRENGTH == 0.6  # the contract's default
    for bad in (-0.01, 1.01, float("nan"), True):
        with pytest.raises(ValueError, match="strength goes from 0"):
            init_fields(raster, bad)
    with pytest.raises(ValueError, match="full path"):
        init_fields("scene.start.tif", 0.5)


def test_rendered_layers_are_named_beside_the_output():
    assert init_image_name("20261203_farm_s7.tif") == "20261203_farm_s7.start.tif"
    assert init_image_name("farm.pipeline-check.tif") == "farm.pipeline-check.start.tif"
    hidden = temp_name("farm.start.tif")
    assert hidden.startswith(".farm.start.tif.") and hidden.endswith(".part.tif")


def test_scene_method_goes_into_the_job_only_when_chosen():
    assert list(SCENE_METHODS) == ["auto", "outpaint", "joint", "cascade"]
    job = build_job(EXTENT, "a town", Resolution("level", 15), scene_method="cascade")
    assert job["scene_method"] == "cascade"
    assert "scene_method" not in build_job(EXTENT, "a town", Resolution("level", 15))
    with pytest.raises(ValueError, match="unknown scene method"):
        build_job(EXTENT, "a town", Resolution("level", 15), scene_method="tiles")


def write_library(path: Path, levels: dict) -> Path:
    path.write_text(json.dumps({"version": 1, "about": "test", "levels": {
        str(level): [{"text": t, "style": "git10m"} for t in texts]
        for level, texts in levels.items()}}))
    return path


def test_examples_are_the_levels_own_else_the_general_list(tmp_path):
    library = write_library(tmp_path / "lib.json", {17: ["roofs and gardens"],
                                                    13: ["a patchwork of fields"]})
    fallback = tmp_path / "examples.txt"
    fallback.write_text("# comment\nan airport\n\n a harbour \n")
    assert examples_for(17, library, fallback) == ["roofs and gardens"]
    assert examples_for(13, library, fallback) == ["a patchwork of fields"]
    assert examples_for(12, library, fallback) == ["an airport", "a harbour"]
    assert examples_for(None, library, fallback) == ["an airport", "a harbour"]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert examples_for(17, broken, fallback) == ["an airport", "a harbour"]
    assert examples_for(17, tmp_path / "missing.json", fallback) == ["an airport", "a harbour"]
    assert general_examples(tmp_path / "missing.txt") == []


def test_the_shipped_files_give_every_level_some_examples():
    for level in range(10, 19):
        assert examples_for(level), level
