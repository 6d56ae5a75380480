"""Before / after swipe: the line's geometry (core/swipe.py, no Qt) and the real thing on a
headless QGIS canvas (tests/plugin_swipe_probe.py): a red result over a blue base, pixels
grabbed from the canvas widget left and right of the line. Also the dock's size check against
a connected engine's own limit (/health max_pixels), which the same probe drives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from text2earth_qgis.core import swipe
from text2earth_qgis.core.swipe import Rect

PROBE = Path(__file__).with_name("plugin_swipe_probe.py")
RED, BLUE, WHITE = [255, 0, 0], [0, 0, 255], [255, 255, 255]

# ----- the line's geometry ------------------------------------------------------------------


def test_the_line_splits_the_map_where_it_stands():
    assert swipe.line_x(0.3, 800) == 240
    assert swipe.before_rect(0.3, 800, 600) == Rect(0, 0, 240, 600)
    assert swipe.after_rect(0.3, 800, 600) == Rect(240, 0, 560, 600)
    assert swipe.before_rect(0.0, 800, 600).empty and not swipe.after_rect(0.0, 800, 600).empty
    assert swipe.after_rect(1.0, 800, 600).empty and swipe.before_rect(1.0, 800, 600).width == 800


@pytest.mark.parametrize("fraction, expected", [(-0.2, 0.0), (1.7, 1.0), (float("nan"), 0.5),
                                                (0.25, 0.25)])
def test_the_line_stays_on_the_map(fraction, expected):
    assert swipe.clamp_fraction(fraction) == expected


def test_a_drag_that_picks_up_the_line_moves_it_by_the_drag():
    # The line at 240 px; pressed 4 px right of it, dragged 100 px: the line is at 340 px.
    assert swipe.drag(0.3, 244, 344, 800) == pytest.approx(340 / 800)


def test_a_press_away_from_the_line_brings_the_line_there():
    assert swipe.drag(0.3, 600, 600, 800) == pytest.approx(0.75)
    assert swipe.drag(0.3, 600, 900, 800) == 1.0  # dragged off the map: held at the edge


def test_a_zero_width_map_has_its_line_in_the_middle():
    assert swipe.fraction_at(10, 0) == 0.5 and swipe.line_x(0.5, 0) == 0


# ----- on a QGIS canvas -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    work = tmp_path_factory.mktemp("swipe")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", T2E_WORK=str(work), HOME=str(work))
    env.pop("TEXT2EARTH_ENGINE_PYTHON", None)
    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True,
                            env=env, timeout=300, cwd=PROBE.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["slot_errors"] == [] and report["heavy"] == []
    return report


@pytest.fixture
def seen(probe):
    assert "error" not in probe["swipe"], probe["swipe"]["error"]
    return probe["swipe"]


def colours(shot, row="300"):
    """{x: [r, g, b]} of a canvas row (every 10 px; x = 0 is the frame)."""
    assert shot["size"] == [800, 600]
    return {x: rgb for x, rgb in shot["rows"][row] if x > 0}


def test_without_swipe_the_result_covers_the_map(seen):
    for row in ("60", "300", "540"):
        assert set(map(tuple, colours(seen["before_swipe"], row).values())) == {tuple(RED)}


def test_left_of_the_line_the_base_right_of_it_the_result(seen):
    assert seen["menu_action"] == ["Swipe: compare with the layers under it (Text2Earth)", True]
    assert seen["tool_active"] and seen["rendered"]
    for row in ("60", "300", "540"):
        row_colours = colours(seen["at_0_3"], row)
        for x, rgb in row_colours.items():
            if x < 236:
                assert rgb == BLUE, (row, x)
            elif x > 244:
                assert rgb == RED, (row, x)
        assert row_colours[240] == WHITE  # the line itself


def test_dragging_the_line_with_the_mouse_moves_the_split(seen):
    assert seen["fraction_after_drag"] == pytest.approx(0.7)  # 240 px + the 320 px dragged
    for x, rgb in colours(seen["after_drag"]).items():
        if x < 556:
            assert rgb == BLUE, x
        elif x > 564:
            assert rgb == RED, x


def test_after_a_pan_the_base_is_rendered_again_in_place(seen):
    # East of X0 + 800 (canvas x 600) there is no result: the base shows on both sides.
    assert seen["rendered_after_pan"]
    for x, rgb in colours(seen["after_pan"]).items():
        if x < 556 or x > 604:
            assert rgb == BLUE, x
        elif 564 < x < 596:
            assert rgb == RED, x


def test_esc_or_removing_the_result_ends_the_swipe_and_leaves_nothing(seen, probe):
    assert seen["visible_in_tree"] == [True, True]  # the layer tree is never touched
    assert seen["tool_after_esc"] is False and seen["items_after_esc"] == 0
    for x, rgb in colours(seen["after_esc"]).items():  # the panned map, as it is
        if x < 596:
            assert rgb == RED, x
        elif x > 604:
            assert rgb == BLUE, x
    assert seen["tool_after_removal"] is False and seen["items_after_removal"] == 0
    assert probe["after_unload"] == {"custom_action_removed": True, "swipe": None}


def test_the_dock_sizes_outputs_against_the_connected_engines_limit(probe):
    rows = probe["engine_limit"]["rows"]
    # 30 km at level 15: 9554 px a side (tests/test_plugin_layout's row "big_utm").
    assert rows["default"]["planned"] == rows["engine_2mpx"]["planned"] == [9554, 9554]
    assert rows["default"]["generate_enabled"] is True
    assert rows["engine_2mpx"]["generate_enabled"] is False
    assert "more than the engine's limit of 2 megapixels" in rows["engine_2mpx"]["tooltip"]
