"""The plugin's stdlib core, without Qt: jobs, names, history, progress, cancel, engine stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from pyproj import CRS

from text2earth_qgis.core import history
from text2earth_qgis.core.contract.files import place_file
from text2earth_qgis.core.contract.scale import ground_resolution
from text2earth_qgis.core.job_spec import (
    AUTO,
    LEVEL,
    RESOLUTION,
    Extent,
    Resolution,
    build_job,
    output_name,
    window_count,
)
from text2earth_qgis.core.service.client import JobCancelled, ServiceError
from text2earth_qgis.core.service.engine_manager import EngineManager, EngineSettings
from text2earth_qgis.core.service.run_job import progress_percent, run_job

EXTENT = Extent(447000, 5411000, 447300, 5411300, "EPSG:32632")


def test_jobs_from_the_form():
    job = build_job(EXTENT, "  a lake ", Resolution(LEVEL, level=16), seed=7, steps=20)
    assert job["bbox"] == [447000, 5411000, 447300, 5411300] and job["crs"] == "EPSG:32632"
    assert job["prompt"] == "a lake" and job["level"] == 16 and "resolution" not in job
    assert job["negative_prompt"] is None and job["seed"] == 7 and job["steps"] == 20
    auto = build_job(EXTENT, "x", Resolution(AUTO, metres_per_pixel=0.6))
    assert auto["resolution"] == 0.6 and "level" not in auto
    assert "precision" not in auto  # auto: the engine decides, and older engines need no field
    assert build_job(EXTENT, "x", Resolution(), precision="bf16")["precision"] == "bf16"
    with pytest.raises(ValueError, match="extent"):
        build_job(Extent(1, 1, 1, 2, "EPSG:4326"), "x", Resolution())
    with pytest.raises(ValueError, match="prompt"):
        build_job(EXTENT, "   ", Resolution())


def test_auto_level_is_the_level_of_the_screen_pixel():
    # A 0.6 m screen pixel at 48.85 N: level 17 is 0.786 m there, 18 is 0.393 m.
    choice = Resolution(AUTO, metres_per_pixel=0.6).choose(48.85)
    assert choice.level == 17 and "auto: a screen pixel is" in choice.message
    assert Resolution(RESOLUTION, metres_per_pixel=0.45).choose(48.85).level == 18
    assert ground_resolution(17, 48.85) == pytest.approx(0.786, abs=0.001)


def test_names():
    when = datetime(2026, 11, 22, 23, 5, 9)
    assert output_name("{date}_{prompt}_s{seed}.tif", "A River / Forest!", 42, 17, when) == \
        "20261122_a-river-forest_s42.tif"
    assert output_name("{level}-{time}", "x", None, None, when) == "auto-230509.tif"
    with pytest.raises(ValueError, match="pattern"):
        output_name("{nope}", "x", 1, 1, when)


def test_window_count_is_the_engines():
    assert window_count(256, 200) == 1  # one canvas up to the 256 px tile (the training size)
    assert window_count(257, 200) == 2  # 192 px stride: two columns, one row
    assert window_count(2000, 2000) == 121  # ceil((2000 - 64) / 192) = 11 per side
    assert window_count(512, 300, tile=512, overlap=128) == 1  # the larger option
    assert window_count(2000, 2000, tile=512, overlap=128) == 25


def test_history_round_trip_and_bad_json():
    entry = history.new_entry({"prompt": "lake", "bbox": [1, 2, 3, 4], "crs": "EPSG:3857"},
                              {"seed": 5, "level": 16, "path": "/x.tif",
                               "bounds": [1, 2, 3, 4], "crs_authid": "EPSG:3857"}, "abc=")
    back = history.loads(history.dumps([entry]))
    assert back == [entry] and "seed 5, level 16" in back[0].label
    assert history.loads("not json") == [] and history.loads(json.dumps([{"x": 1}])) == []


@pytest.mark.parametrize("status,percent", [
    ({"step": 0, "steps": 50}, 0.0), ({"step": 25, "steps": 50}, 50.0),
    ({"step": 10, "steps": 10, "tile": 1, "tiles": 4}, 25.0),
    ({"step": 5, "steps": 10, "tile": 4, "tiles": 4}, 87.5), ({}, 0.0),
])
def test_progress_covers_all_windows_of_a_scene(status, percent):
    assert progress_percent(status) == pytest.approx(percent)


class FakeClient:
    """Answers like the service: a job that ends 'done' before the cancel reaches it."""

    def __init__(self, staged: Path) -> None:
        self.staged = staged
        self.cancels = 0

    def submit(self, job):
        return {"id": "j1"}

    user_cancelled = False

    def wait(self, job_id, poll, on_progress):
        FakeClient.user_cancelled = True  # the user clicks Cancel as the last step runs
        on_progress({"state": "running", "step": 1, "steps": 2})
        self.staged.write_bytes(b"tif")
        return {"path": str(self.staged), "seed": 1}

    def cancel(self, job_id):
        self.cancels += 1
        raise ServiceError(409, "job j1 already ended (done)")

    def preview(self, job_id):
        return None

    def download(self, job_id, destination, overwrite):
        raise AssertionError("a cancelled job is not delivered")


def test_cancel_racing_the_end_of_the_job_keeps_no_file(tmp_path):
    staged = tmp_path / "staged.tif"
    client = FakeClient(staged)
    with pytest.raises(JobCancelled):
        run_job(client, {"prompt": "x"}, tmp_path / "out.tif",
                is_canceled=lambda: FakeClient.user_cancelled)
    assert client.cancels == 1 and not staged.exists() and not (tmp_path / "out.tif").exists()


def test_stop_does_not_wait_for_a_start_under_way():
    manager = EngineManager(EngineSettings())
    manager._lock.acquire()  # a start in a worker thread holds it
    try:
        start = time.monotonic()
        manager.stop()
        assert time.monotonic() - start < 1.0
        assert manager.stops == 1  # the start under way will stop what it started
    finally:
        manager._lock.release()


def test_engine_not_found_is_a_clear_state(tmp_path, monkeypatch):
    monkeypatch.delenv("TEXT2EARTH_ENGINE_PYTHON", raising=False)
    manager = EngineManager(EngineSettings(python=str(tmp_path / "no-python")))
    monkeypatch.setattr("text2earth_qgis.core.service.engine_manager.find_engine_python",
                        lambda c: None)
    with pytest.raises(Exception, match="no engine installed yet: click Set up engine…"):
        manager.ensure_running()
    assert manager.state == "not found"
    assert "HTTP" not in manager.message and "TEXT2EARTH_ENGINE_PYTHON" not in manager.message


def test_place_file_never_clobbers(tmp_path):
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("old")
    with pytest.raises(FileExistsError):
        place_file(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "old"
    place_file(tmp_path / "a", tmp_path / "c")
    assert (tmp_path / "c").read_text() == "new" and not (tmp_path / "a").exists()
    (tmp_path / "d").write_text("newer")
    place_file(tmp_path / "d", tmp_path / "b", overwrite=True)
    assert (tmp_path / "b").read_text() == "newer"


CRS_PROBE = """
import json
from qgis.core import QgsApplication, QgsCoordinateReferenceSystem
from text2earth_qgis.qgis_compat import crs_for_engine
app = QgsApplication([], False); app.initQgis()
custom = QgsCoordinateReferenceSystem.fromProj(
    "+proj=tmerc +lat_0=0 +lon_0=10.3 +k=0.9996 +x_0=500000 +y_0=0 +ellps=GRS80 +units=m")
print(json.dumps([crs_for_engine(QgsCoordinateReferenceSystem("EPSG:2263")),
                  crs_for_engine(custom), custom.authid()]))
"""


def test_crs_handed_to_the_engine_is_one_pyproj_reads():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", CRS_PROBE], capture_output=True, text=True,
                         env=env, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    epsg, custom, authid = json.loads(out.stdout.strip().splitlines()[-1])
    assert epsg == "EPSG:2263"
    assert not authid.startswith("EPSG")  # QGIS gives it no code, or a USER: one
    parsed = CRS.from_user_input(custom)
    assert parsed.equals(CRS.from_proj4(
        "+proj=tmerc +lat_0=0 +lon_0=10.3 +k=0.9996 +x_0=500000 +y_0=0 +ellps=GRS80 +units=m"))


def test_service_stop_flag_is_honoured_after_a_start(monkeypatch, tmp_path):
    """A stop asked while the engine started stops it as soon as it is up."""
    stopped = threading.Event()

    class FakeService:
        client = None

        def stop(self):
            stopped.set()

    monkeypatch.setattr("text2earth_qgis.core.service.engine_manager.find_engine_python",
                        lambda c: sys.executable)

    def fake_start(*args, **kwargs):
        manager.stops += 1  # the UI asked to stop during the start
        return FakeService()

    monkeypatch.setattr("text2earth_qgis.core.service.engine_manager.start_local_service",
                        fake_start)
    manager = EngineManager(EngineSettings(staging_dir=str(tmp_path)))
    with pytest.raises(Exception, match="stopped while it was starting"):
        manager.ensure_running()
    assert stopped.is_set() and manager.client is None


def test_a_stop_before_a_queued_start_runs_starts_no_engine(monkeypatch, tmp_path):
    """The dock queued a connect, then the plugin unloaded (stop) before the task ran, or
    while it was still checking health: the start must start nothing at all, or the engine
    runs on unowned after QGIS is gone (the load/unload probe left two per run)."""
    spawned = []

    def spawn(*args, **kwargs):
        spawned.append(args)
        raise RuntimeError("spawned")  # far enough: the start went ahead

    monkeypatch.setattr("text2earth_qgis.core.service.engine_manager.find_engine_python",
                        lambda c: sys.executable)
    monkeypatch.setattr("text2earth_qgis.core.service.engine_manager.start_local_service",
                        spawn)
    manager = EngineManager(EngineSettings(staging_dir=str(tmp_path)))
    asked = manager.stops  # the EngineTask is made: the start is asked now
    manager.stop()  # unload before the task runs
    with pytest.raises(Exception, match="stopped while it was starting"):
        manager.ensure_running(since=asked)
    assert spawned == [] and manager.state == "stopped"
    # A start asked after the stop is a new request: it goes ahead.
    with pytest.raises(RuntimeError, match="spawned"):
        manager.ensure_running(since=manager.stops)
    assert len(spawned) == 1


def test_a_stop_during_the_start_ends_the_spawned_engine_at_once(monkeypatch, tmp_path):
    """QGIS closing (or the plugin unloading) while the engine still starts must not leave the
    engine process running unowned: stop() ends the process the start spawned, at once."""
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\nexec sleep 120\n")  # never becomes healthy
    fake_python.chmod(0o755)
    monkeypatch.setattr("text2earth_qgis.core.service.engine_manager.find_engine_python",
                        lambda c: str(fake_python))
    manager = EngineManager(EngineSettings(staging_dir=str(tmp_path), start_timeout=60))
    failures: list[Exception] = []

    def start() -> None:
        try:
            manager.ensure_running()
        except Exception as exc:  # noqa: BLE001 - the test reads it
            failures.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    deadline = time.monotonic() + 20
    while manager._spawned is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process = manager._spawned
    assert process is not None
    manager.stop()
    assert process.wait(timeout=5) is not None  # ended, not left for a minute
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert failures and "stopped while it was starting" in str(failures[0])
    assert manager.state == "stopped"
