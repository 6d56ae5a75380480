"""Issue 24, goal 2, in the dock: the run row's status line says what a job waits for before
its first step, whole, and goes back to the steps once they run. The widget runs in
tests/plugin_model_wait_probe.py (a headless QGIS of its own); the checks here judge it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("plugin_model_wait_probe.py")


@pytest.fixture(scope="module")
def probe():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True,
                            env=env, timeout=120, cwd=PROBE.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_status_line_says_what_the_job_waits_for(probe):
    assert probe["slot_errors"] == []
    assert probe["loading"]["text"] == "loading the model, 6 s"
    assert probe["compiling"]["text"] == (
        "compiling for this machine, 40 s (first start only; a few minutes)")
    for name in ("loading", "compiling"):
        shown = probe[name]["shown"].replace("\u200b", "")
        assert shown == probe[name]["text"], name  # whole in the dock's width: nothing cut
        assert probe[name]["progress"] == 0


def test_the_steps_replace_the_wait_once_they_run(probe):
    assert probe["first_step"]["text"] == "running: step 1 of 50"
    assert probe["first_step"]["progress"] == 2
