"""Issue 23's confusions in the dock, observed in a headless QGIS (tests/plugin_confuse_probe.py,
its own process) and judged here: the wheel scrolls the form and changes no field; a drawn
extent keeps its level when the canvas is resized; Reuse settings reproduces the run; an
engine killed with SIGKILL shows as crashed with Restart, without GPU or URL advice, and
nothing stale stays; a cancelled task ends terminated and is logged as cancelled; long status
lines wrap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from text2earth_qgis.core.contract.scale import level_for_resolution

PROBE = Path(__file__).with_name("plugin_confuse_probe.py")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    work = tmp_path_factory.mktemp("states")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", T2E_WORK=str(work))
    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True,
                            env=env, timeout=300, cwd=PROBE.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def section(report, name):
    part = report[name]
    assert "error" not in part, part["error"]
    return part


def test_no_exception_escaped_into_qt(probe):
    assert probe["slot_errors"] == []


def test_the_wheel_scrolls_the_form_and_changes_no_field(probe):
    wheel = section(probe, "wheel")
    assert wheel["scrollable"]
    (index, steps, scrolled), (index2, steps2, scrolled2) = (
        wheel["unfocused"]["before"], wheel["unfocused"]["after"])
    assert (index2, steps2) == (index, steps)  # neither the combo nor the spin box moved
    assert scrolled2 > scrolled  # the form scrolled down instead
    before, after = wheel["focused_spin"]
    if wheel["spin_focused"]:  # the offscreen platform may give no focus to a window
        assert after == before - 1  # a field the user clicked into still takes the wheel
    assert wheel["edit_guarded"]


def test_a_drawn_extent_keeps_its_level_when_the_canvas_is_resized(probe):
    resize = section(probe, "resize")
    # Without an extent, auto follows the map: 4x coarser screen pixels, 2 levels down.
    assert resize["no_extent_after"]["level"] == resize["no_extent_before"]["level"] - 2
    drawn, resized = resize["drawn"], resize["resized"]
    # 800 m over 800 px at 48.8 N (UTM 32N): 1 m screen pixels, level 17 there.
    assert drawn["level"] == level_for_resolution(1.0, 48.84).level == 17
    assert resized["level"] == drawn["level"] and resized["enabled"]
    assert not resized["status"].startswith("Too small")
    assert "when the extent was set" in resized["info"]


def test_reuse_settings_reproduces_the_run(probe):
    reuse = section(probe, "reuse")
    for mode in ("level", "auto"):
        run = reuse[mode]
        assert run["rebuilt"] == run["job"], mode  # the same request again, seed included
        assert run["start_from_layers"] is False and "init_raster" not in run["rebuilt"]
        assert run["mode"] == mode
    assert reuse["level"]["job"]["level"] == 17
    assert "level 17" in reuse["auto"]["info"]  # not 'metres per pixel'


def test_a_killed_engine_shows_crashed_with_restart_and_nothing_stale(probe):
    crash = section(probe, "crash")
    assert crash["connected_label"].startswith("Engine: connected, fake CPU")
    assert crash["detected"]  # by the dock's watch, with no job running
    assert crash["label"].startswith("Engine: crashed: The engine was killed")
    assert crash["button"] == ["Restart", True]
    assert crash["messages_after_crash"] == []  # the earlier GPU message is taken back
    assert crash["status_after_crash"] == ""
    assert crash["restarted_label"].startswith("Engine: connected")
    # Killed mid-job: the job says why, with no GPU and no engine-URL advice.
    assert crash["job_status"].startswith("failed: The engine was killed")
    for text in [crash["job_status"], *crash["job_messages"]]:
        assert "GPU" not in text and "engine URL" not in text
    assert crash["job_label"].startswith("Engine: crashed") and crash["job_button"] == "Restart"
    # After a restart the failure is gone from the tab and the message bar.
    assert crash["after_restart_status"] == "" and crash["after_restart_messages"] == []


def test_a_cancelled_task_ends_terminated_and_is_logged_as_cancelled(probe):
    cancel = section(probe, "cancel")
    assert cancel["ended"] == [False] and cancel["status"] == cancel["terminated"]
    texts = [text for text, tag in cancel["logged"] if tag == "Text2Earth"]
    assert any("cancelled" in text for text in texts), cancel["logged"]
    assert not any("complete" in text.lower() for text, _ in cancel["logged"])


def test_long_status_lines_wrap_instead_of_being_cut(probe):
    wrap = section(probe, "wrap")
    assert wrap["text"].startswith("done: ") and wrap["text"].endswith(".pipeline-check.tif")
    assert wrap["word_wrap"] and wrap["engine_wraps"]
    assert wrap["height_at_200"] >= 2 * wrap["line"]  # more than one line at 200 px
    # Copied, it is the whole path, without the zero-width break points the label shows.
    assert wrap["copied"] == "done: " + wrap["full_path"]
