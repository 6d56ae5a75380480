"""The set-up and model dialogs in headless QGIS (tests/engine_setup_probe.py): a real set-up
run against the small offline requirement set, a broken Python, a download from a fake hub,
the offline state, and Copy diagnostics; QGIS keeps running throughout."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_hub import FakeHub, repo_from_folder
from setup_wheels import isolated_pip_env, write_requirement_set

PROBE = Path(__file__).with_name("engine_setup_probe.py")


@pytest.fixture(scope="module")
def probe(tiny_t2i, tmp_path_factory):
    work = tmp_path_factory.mktemp("setup-ui")
    wheels = write_requirement_set(work / "wheels")
    files = repo_from_folder(tiny_t2i)
    with FakeHub({"lcybuaa/Text2Earth": files}) as hub:
        env = dict(isolated_pip_env(), QT_QPA_PLATFORM="offscreen", T2E_WORK=str(work),
                   T2E_WHEELS=str(wheels), T2E_HUB=hub.url)
        result = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True,
                                env=env, timeout=500)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["work"], report["files"] = work, files
    return report


def section(report, name):
    part = report[name]
    assert "error" not in part, part["error"]
    return part


def test_setup_dialog_runs_a_real_setup_and_reports_success(probe):
    ok = section(probe, "setup_ok")
    assert {"Set up engine…", "Download model…", "Text2Earth"} <= set(ok["menu"])
    assert ok["visible"] and ok["started"] and ok["finished"]
    # One button; the summary said before anything started what it would download and
    # install, and which torch and why; the rest waits, collapsed, under Advanced, and the
    # defaults are the engine and requirements shipped with the plugin (empty fields).
    assert ok["planned"] and ok["advanced_collapsed"]
    assert ok["defaults"] == {"source": "", "requirements": "", "start_text": "Set up"}
    assert ok["summary"].startswith("Downloads about "), ok["summary"]
    assert "Mbit/s" in ok["summary"] and "torch: the " in ok["summary"]
    assert "QGIS's own Python is left untouched" in ok["summary"]
    assert ok["status"].startswith("The engine is set up") and "torch 2.0.0" in ok["status"]
    assert ok["progress"] == 100
    assert "[torch] Successfully installed torch-2.0.0" in ok["log"]
    assert "CPU build" in ok["log"]  # the torch choice, as asked
    assert "already set up" in ok["summary_after"]  # a second press checks and repairs
    # The new engine is what the plugin uses from now on.
    assert ok["engine_python_setting"] == ok["manager_python"] == ok["venv_python"]
    assert os.path.isfile(ok["venv_python"])


def test_setup_dialog_explains_a_broken_python(probe):
    bad = section(probe, "setup_broken_python")
    assert bad["started"] and bad["finished"] and bad["start_enabled"]
    assert bad["status"].startswith("The Python for the engine does not work.")
    assert "Choose another Python 3.10 or newer" in bad["status"]


def test_a_failure_while_the_dialog_is_hidden_reaches_the_message_bar(probe):
    hidden = section(probe, "setup_hidden_failure")
    assert hidden["hidden"] and hidden["finished"]
    assert len(hidden["bar"]) == 1, hidden["bar"]
    title, text = hidden["bar"][0]
    assert title == "Text2Earth set-up"
    assert text.startswith("The Python for the engine does not work.")
    assert "Choose another Python 3.10 or newer" in text


def test_model_dialog_downloads_then_shows_offline_state_with_the_command(probe):
    model = section(probe, "model_download")
    assert model["visible"] and model["finished"]
    assert "lcybuaa/Text2Earth: offline / model missing" in model["state_before"]
    assert "lcybuaa/Text2Earth: ready" in model["state_after"]
    assert model["status"].startswith("Downloaded into") and model["progress"] == 100
    assert model["model_cache_setting"] == str(probe["work"] / "hub")
    unet = "unet/diffusion_pytorch_model.safetensors"
    blob = (probe["work"] / "hub" / "models--lcybuaa--Text2Earth" / "blobs"
            / hashlib.sha256(probe["files"][unet]).hexdigest())
    assert blob.read_bytes() == probe["files"][unet]
    assert model["offline_finished"] and model["offline_seconds"] < 15
    assert model["offline_status"].startswith("Offline / model missing")
    assert ('hf download lcybuaa/Text2Earth-inpainting --include "*.safetensors" "*.json" '
            '"*.txt"') in model["offline_status"]
    assert "cannot be used" in model["bad_folder_status"]
    assert "model_index.json is missing" in model["bad_folder_status"]


def test_copy_diagnostics_and_unload(probe):
    diag = section(probe, "diagnostics")
    assert diag["buttons"] == ["Set up engine…", "Download model…", "Copy diagnostics"]
    text = diag["clipboard"]
    assert text.startswith("Text2Earth diagnostics") and "plugin: 0.1.0" in text
    assert "QGIS: 3." in text and f"engine Python: {probe['work']}" in text
    assert "set-up log: " + str(probe["work"] / "engine-venv-setup.log") in text
    assert diag["setup_visible_again"] is True
    unload = section(probe, "unload")
    assert unload["removed"] == ["Download model…", "Set up engine…", "Text2Earth"]
    assert unload["dialogs_left"] == 0
    assert probe["slot_errors"] == []
