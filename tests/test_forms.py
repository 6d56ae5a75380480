"""The Generate tab's state as a value (text2earth_qgis/forms.py): Reuse settings is the
inverse of a run. Judged on the engine's own request schema (what it accepts, which level it
picks) and on the fields a rerun must keep."""

from __future__ import annotations

import dataclasses
import math

import pytest
from pyproj import Transformer

from engine.service.schemas import GenerateJob
from text2earth_qgis.core import scale
from text2earth_qgis.core.job_spec import AUTO, LEVEL, RESOLUTION
from text2earth_qgis.forms import FORM_KEY, GenerateForm, engine_job

BBOX = (447000.0, 5411000.0, 447300.0, 5411250.0)
START = "/data/Text2Earth/scene.start.tif"

FORMS = [
    GenerateForm("a park near the river", BBOX, "EPSG:32632", mode=LEVEL, level=16,
                 metres_per_pixel=None, seed=1234),
    # auto from map zoom: 1.1413 m screen pixels at 48.8 N (0.842 m level-17 pixels there)
    GenerateForm("farmland", BBOX, "EPSG:32632", mode=AUTO, metres_per_pixel=1.1413,
                 seed=7, steps=15, scheduler="dpm++", overlap=32),
    GenerateForm("a harbour", BBOX, "EPSG:32632", mode=RESOLUTION, metres_per_pixel=0.842,
                 negative_prompt="clouds", seed=0, guidance=6.5, scene_method="cascade",
                 model="/models/t2e", variations=3),
    GenerateForm("a town that follows the map", BBOX, "EPSG:32632", mode=LEVEL, level=17,
                 metres_per_pixel=None, seed=99, start_from_layers=True, strength=0.35),
]


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.prompt[:12])
def test_reuse_is_the_inverse_of_a_run(form):
    job = form.to_job(init_raster=START if form.start_from_layers else None)
    assert GenerateForm.from_job(job) == form
    rerun = GenerateForm.from_job(job).to_job(
        init_raster=START if form.start_from_layers else None)
    assert rerun == job


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.prompt[:12])
def test_the_engine_accepts_what_is_sent_and_picks_the_runs_level(form):
    job = form.to_job(init_raster=START if form.start_from_layers else None)
    sent = engine_job(job)
    assert FORM_KEY not in sent
    body = GenerateJob.model_validate(sent)  # strict, extra fields forbidden
    assert body.seed == form.seed and body.prompt == form.prompt
    assert (body.init_raster is not None) == form.start_from_layers
    lon, latitude = Transformer.from_crs(form.crs, "EPSG:4326", always_xy=True).transform(
        (BBOX[0] + BBOX[2]) / 2, (BBOX[1] + BBOX[3]) / 2)
    level = body.level or scale.level_for_resolution(body.resolution, latitude).level
    if form.mode == LEVEL:
        assert level == form.level
    else:  # the nearest Google level to the asked metres, on the ground there
        ground = 2 * math.pi * 6378137 / 256 * math.cos(math.radians(latitude)) / 2**level
        assert 2**-0.5 <= form.metres_per_pixel / ground <= 2**0.5


def test_a_later_run_from_layers_does_not_leak_into_a_reuse():
    """Confuse 6: a plain run reused after a run from layers stays a plain run."""
    plain = FORMS[0].to_job()
    assert "init_raster" not in plain and "strength" not in plain
    form = GenerateForm.from_job(plain)
    assert form.start_from_layers is False and form.strength is None
    with pytest.raises(ValueError, match="not drawn"):
        FORMS[3].to_job()  # a run from layers never goes without its picture


def test_auto_mode_comes_back_as_auto_not_as_metres_per_pixel():
    auto = FORMS[1]
    job = auto.to_job()
    assert job["resolution"] == 1.1413 and "level" not in job
    back = GenerateForm.from_job(job)
    assert back.mode == AUTO and back.metres_per_pixel == 1.1413
    # A job from an engine client that keeps no form record: its own fields decide.
    assert GenerateForm.from_job(engine_job(job)).mode == RESOLUTION


def test_bad_input_is_said_before_anything_is_drawn():
    with pytest.raises(ValueError, match="type a prompt"):
        dataclasses.replace(FORMS[3], prompt="  ").check()
    FORMS[3].check()  # a run from layers checks without its picture
