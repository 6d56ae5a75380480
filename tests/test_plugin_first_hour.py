"""The stdlib core behind a GIS user's first hour: size checks in map words, names that
never collide, demo results named as pipeline checks, a time left that does not swing,
quality presets, the default output folder, the edit tab's scale line and the first-run
messages. Judged against the engine's own functions and known numbers."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import pytest

from engine.geo.grid import LevelRequest, build_grid
from engine.jobs.regenerate import ModelScale
from text2earth_qgis.core.contract import scale
from text2earth_qgis.core.contract.files import default_output_folder, unused_name
from text2earth_qgis.core.contract.tiles import plan_scene
from text2earth_qgis.core.edit_spec import edit_scale_text
from text2earth_qgis.core.job_spec import (
    QUALITY,
    Extent,
    Resolution,
    build_job,
    is_pipeline_check,
    pipeline_check_name,
)
from text2earth_qgis.core.output_plan import (
    DEFAULT_MAX_PIXELS,
    check_size,
    grid_size,
    pixel_size_units,
)
from text2earth_qgis.core.service.client import EngineClient
from text2earth_qgis.core.service.engine_manager import NO_ENGINE_MESSAGE, EngineSettings
from text2earth_qgis.core.service.run_job import duration, run_job
from text2earth_qgis.core.setup.model_presence import demo_expected, real_weights_present
from text2earth_qgis.core.time_left import TimeLeft

# ----- size checks -------------------------------------------------------------------------

@pytest.mark.parametrize("bbox, crs, level", [
    ((447000, 5411000, 447600, 5411400), "EPSG:32632", 17),
    ((944000, 6240000, 946500, 6241800), "EPSG:3857", 16),  # Mercator: the level's own pixel
    ((440000, 5400000, 470000, 5430000), "EPSG:32632", 15),
])
def test_grid_size_is_the_engines_for_the_same_ground_scale(bbox, crs, level):
    grid = build_grid(bbox, crs, LevelRequest(level=level))
    # The ground scale measured at the centre over a thousandth of the extent (pyproj here,
    # QgsDistanceArea in the dock), turned into pixels by the shared core.
    px, py = pixel_size_units(grid.ground_resolution, *_metres_per_unit(bbox, crs),
                              level=level, web_mercator=crs == "EPSG:3857")
    assert list(grid_size(bbox[2] - bbox[0], bbox[3] - bbox[1], px, py)) == [
        grid.width, grid.height]


def _metres_per_unit(bbox, crs):
    from pyproj import CRS, Transformer

    crs = CRS.from_user_input(crs)
    to_lonlat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    geod = crs.get_geod()
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    sx, sy = (bbox[2] - bbox[0]) * 1e-3, (bbox[3] - bbox[1]) * 1e-3

    def dist(x0, y0, x1, y1):
        return geod.inv(*to_lonlat.transform(x0, y0), *to_lonlat.transform(x1, y1))[2]

    return (dist(cx - sx / 2, cy, cx + sx / 2, cy) / sx,
            dist(cx, cy - sy / 2, cx, cy + sy / 2) / sy)


def test_tiny_output_is_named_in_pixels_and_metres():
    check = check_size(1, 1, 17, 0.786)
    assert check.problem.startswith("Too small: only 1 x 1 pixels at level 17 (0.786 m per")
    assert "at least 64 pixels a side" in check.problem
    assert check_size(64, 64, 17, 0.786).problem is None
    assert check_size(63, 500, 17, 0.786).problem.startswith("Too small")


def test_limit_is_said_in_megapixels_without_http_codes():
    at_limit = check_size(25000, 25000, 15, 3.1)
    assert at_limit.problem is None and at_limit.windows == 130 * 130  # 192 px strides
    over = check_size(25001, 25000, 15, 3.1)
    assert over.problem.startswith("Too large: 25,001 x 25,000 pixels (625 megapixels)")
    assert "limit of 625 megapixels" in over.problem and "lower level" in over.problem
    assert not re.search(r"HTTP|\b4\d\d\b|max.pixels", over.problem)
    assert DEFAULT_MAX_PIXELS == 25000 * 25000


def test_window_count_follows_the_quality_windows():
    draft = QUALITY["Draft"]
    plan = plan_scene(1000, 1000, draft.tile, draft.overlap)
    assert check_size(1000, 1000, 17, 0.8, tile=draft.tile,
                      overlap=draft.overlap).windows == plan.nx * plan.ny
    # 256 px windows with 32 px overlap: 224 px strides, so 5 x 5 windows cover 1000 px.
    assert plan.nx * plan.ny == 25


# ----- names ---------------------------------------------------------------------------------

def test_names_take_a_counter_and_never_collide():
    taken = {"a.tif", "a_2.tif"}
    assert unused_name("a.tif", taken.__contains__) == "a_3.tif"
    assert unused_name("b.tif", taken.__contains__) == "b.tif"


def test_demo_results_are_named_pipeline_checks():
    assert pipeline_check_name("x_s1.tif") == "x_s1.pipeline-check.tif"
    assert pipeline_check_name("x_s1.pipeline-check.tif") == "x_s1.pipeline-check.tif"
    assert is_pipeline_check({"tags": {"TEXT2EARTH_PIPELINE_CHECK": "yes: random demo"}})
    assert not is_pipeline_check({"tags": {"TEXT2EARTH_PROMPT": "x"}})


class DemoEngine(EngineClient):
    """The real client's delivery, with a service that made its file with demo weights."""

    def __init__(self, staged: Path) -> None:
        super().__init__("http://127.0.0.1:9")
        self.staged = staged

    def submit(self, job):
        return {"id": "j1"}

    def wait(self, job_id, poll, on_progress):
        self.staged.write_bytes(b"II*\0")
        return self.result(job_id)

    def result(self, job_id):
        return {"path": str(self.staged),
                "tags": {"TEXT2EARTH_PIPELINE_CHECK": "yes: random demo weights"}}

    def preview(self, job_id):
        return None


def test_a_demo_result_is_delivered_under_a_pipeline_check_name(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scene.pipeline-check.tif").write_bytes(b"older")
    staged = tmp_path / "staged.tif"
    result, path = run_job(DemoEngine(staged), {"prompt": "x"}, tmp_path / "out" / "scene.tif")
    assert path == tmp_path / "out" / "scene_2.pipeline-check.tif"  # one tag, counter before it
    assert path.read_bytes() == b"II*\0" and not staged.exists()
    assert (tmp_path / "out" / "scene.pipeline-check.tif").read_bytes() == b"older"
    assert not (tmp_path / "out" / "scene.tif").exists()


def test_demo_weights_are_expected_when_the_model_is_nowhere(tmp_path):
    empty_cache = tmp_path / "hub"
    empty_cache.mkdir()
    settings = EngineSettings(model_cache=str(empty_cache))
    assert real_weights_present(None, str(empty_cache)) is False
    assert demo_expected(settings) is True
    assert demo_expected(EngineSettings(model_cache=str(empty_cache), demo_fallback=False)) \
        is False
    assert demo_expected(EngineSettings(url="http://127.0.0.1:1", model_cache=str(empty_cache))) \
        is False  # a remote engine reports it itself


def test_a_model_folder_means_real_weights(tiny_t2i, tmp_path):
    assert demo_expected(EngineSettings(model=str(tiny_t2i))) is False
    assert demo_expected(EngineSettings(model=str(tmp_path))) is True  # not a model folder


# ----- time left -------------------------------------------------------------------------------

def test_time_left_appears_only_once_it_settles():
    left = TimeLeft()
    # Warm-up: the engine's first estimates swing by minutes.
    assert [left.update(eta) for eta in (900, 120, 400)] == [None, None, None]
    shown = [left.update(eta) for eta in (100, 96, 92, 88)]
    assert shown[0] is None and shown[-1] is not None
    assert 85 <= shown[-1] <= 130  # smoothed towards the settled estimates
    assert left.update(None) == pytest.approx(shown[-1])  # a status without one keeps it


def test_durations_read_as_a_waiting_user_needs():
    assert duration(40) == "40 s" and duration(200) == "3 min"
    assert duration(4800) == "1 h 20 min"


# ----- presets and jobs ------------------------------------------------------------------------

def test_quality_presets_go_into_the_job():
    extent = Extent(447000, 5411000, 447300, 5411300, "EPSG:32632")
    draft, best = QUALITY["Draft"], QUALITY["Best"]
    job = build_job(extent, "a farm", Resolution("level", 17), steps=draft.steps,
                    scheduler=draft.scheduler, tile=draft.tile, overlap=draft.overlap)
    assert (job["steps"], job["scheduler"], job["tile"], job["overlap"]) == (
        15, "dpm++", 256, 32)
    job = build_job(extent, "a farm", Resolution("level", 17), steps=best.steps,
                    scheduler=best.scheduler, tile=best.tile, overlap=best.overlap)
    assert "tile" not in job and "overlap" not in job  # the engine's defaults: no field
    assert job["steps"] == 50 and job["scheduler"] == "euler"
    assert draft.steps < QUALITY["Standard"].steps < best.steps


def test_default_output_folder_is_the_project_or_the_users_documents():
    assert default_output_folder("/data/project", "/home/u/Documents") == Path(
        "/data/project/text2earth")
    folder = default_output_folder("", "/home/u/Documents")
    assert folder == Path("/home/u/Documents/Text2Earth")
    assert not folder.is_relative_to(tempfile.gettempdir())


# ----- the edit tab's scale line -----------------------------------------------------------

@pytest.mark.parametrize("pixel, latitude, level", [
    ((0.5, 0.5), 48.8, None), ((0.8, 0.8), 48.8, None), ((0.1, 0.1), 48.8, None),
    ((2.0, 2.0), 10.0, 18),
])
def test_edit_scale_line_matches_the_engines_resampling(pixel, latitude, level):
    text = edit_scale_text(pixel, latitude, level)
    chosen = level or scale.level_for_resolution(math.sqrt(pixel[0] * pixel[1]),
                                                 latitude).level
    model_m = 156543.03392804097 * math.cos(math.radians(latitude)) / 2**chosen
    assert text.startswith(f"level {chosen} (")
    engine = ModelScale.between(pixel, model_m)
    if engine.identity:
        assert text.endswith(": used as they are")
    else:
        assert f"resampled {math.sqrt(engine.sx * engine.sy):.2f}x" in text


def test_first_run_message_points_to_set_up_engine():
    assert "Set up engine…" in NO_ENGINE_MESSAGE
    assert "PyTorch" in NO_ENGINE_MESSAGE and "several GB" in NO_ENGINE_MESSAGE
    assert "TEXT2EARTH_ENGINE_PYTHON" not in NO_ENGINE_MESSAGE
