"""Numbers the dock and the engine each hold, since core/output_plan.py and core/edit_spec.py
are not in the engine's contract (core/contract): the pixel limit, the output size,
the resampling snap, and the limit the engine reports in /health. The expected sizes come
from Web Mercator's published zoom-0 pixel (156543.03392804097 m), not from either side."""

from __future__ import annotations

import math

import pytest

from engine.errors import InputError
from engine.geo.grid import DEFAULT_MAX_PIXELS as ENGINE_MAX_PIXELS
from engine.geo.grid import LevelRequest, build_grid
from engine.jobs.regenerate import SNAP_LOG2, ModelScale
from text2earth_qgis.core.contract import scale
from text2earth_qgis.core.edit_spec import RESAMPLE_SNAP_LOG2, edit_scale_text
from text2earth_qgis.core.output_plan import (
    DEFAULT_MAX_PIXELS,
    check_size,
    grid_size,
    limit_from_health,
    pixel_size_units,
)

ZOOM0_PX = 156543.03392804097  # EPSG:3857 metres of a zoom-0 pixel (256 px around the equator)
X0, Y0 = 944000.0, 6240000.0


def test_the_default_limits_are_equal():
    assert DEFAULT_MAX_PIXELS == ENGINE_MAX_PIXELS == 625_000_000
    assert RESAMPLE_SNAP_LOG2 == SNAP_LOG2


# (level, columns, rows) as fractional pixel counts: both sides must round alike, also next to
# the .5 boundary.
SIZES = [(16, 1000, 600), (17, 255.6, 256.4), (12, 64.49, 64.51), (18, 2047.4, 1.6),
         (10, 3000.7, 2000.2), (14, 99.5001, 100.4999)]


@pytest.mark.parametrize("level, cols, rows", SIZES)
def test_web_mercator_output_sizes_agree(level, cols, rows):
    pixel = ZOOM0_PX / 2**level
    bbox = (X0, Y0, X0 + cols * pixel, Y0 + rows * pixel)
    expected = [max(1, round(cols)), max(1, round(rows))]
    grid = build_grid(bbox, "EPSG:3857", LevelRequest(level=level))
    px, py = pixel_size_units(0.0, 1.0, 1.0, level=level, web_mercator=True)
    dock = grid_size(bbox[2] - bbox[0], bbox[3] - bbox[1], px, py)
    assert [grid.width, grid.height] == expected == list(dock)


@pytest.mark.parametrize("cols, rows", [(1000, 600), (300, 200)])
def test_both_refuse_one_pixel_over_the_same_limit(cols, rows):
    level = 16
    pixel = ZOOM0_PX / 2**level
    bbox = (X0, Y0, X0 + cols * pixel, Y0 + rows * pixel)
    ground = scale.ground_resolution(level, 48.85)
    at_limit = cols * rows
    # At the limit: accepted by both.
    assert build_grid(bbox, "EPSG:3857", LevelRequest(level=level), max_pixels=at_limit)
    assert check_size(cols, rows, level, ground, max_pixels=at_limit).problem is None
    # One pixel less: refused by both.
    with pytest.raises(InputError, match="more than the limit"):
        build_grid(bbox, "EPSG:3857", LevelRequest(level=level), max_pixels=at_limit - 1)
    problem = check_size(cols, rows, level, ground, max_pixels=at_limit - 1).problem
    assert problem is not None and problem.startswith("Too large")


# Ratios of the raster's pixel to the model's, on both sides of 2**0.1 (about 7 %).
RATIOS = [1.0, 1.05, 0.95, 2**0.1 * (1 - 1e-6), 2**0.1 * (1 + 1e-6), 2**-0.1 * (1 + 1e-6),
          2**-0.1 * (1 - 1e-6), 1.2, 0.5, 3.0]


@pytest.mark.parametrize("ratio", RATIOS)
def test_the_resampling_said_before_run_is_the_engines(ratio):
    level, latitude = 17, 40.0
    model_m = scale.ground_resolution(level, latitude)
    engine_keeps = ModelScale.between((ratio * model_m, ratio * model_m), model_m).identity
    dock_keeps = edit_scale_text((ratio * model_m, ratio * model_m), latitude, level).endswith(
        "used as they are")
    assert engine_keeps == dock_keeps == (abs(math.log2(ratio)) <= 0.1)


@pytest.mark.parametrize("health, limit", [
    ({"max_pixels": 4_000_000}, 4_000_000),
    ({}, DEFAULT_MAX_PIXELS),  # an engine older than the field
    (None, DEFAULT_MAX_PIXELS),  # not connected
    ({"max_pixels": 0}, DEFAULT_MAX_PIXELS),
    ({"max_pixels": True}, DEFAULT_MAX_PIXELS),
    ({"max_pixels": "1e6"}, DEFAULT_MAX_PIXELS),
])
def test_the_dock_takes_the_engines_limit_from_health(health, limit):
    assert limit_from_health(health) == limit
