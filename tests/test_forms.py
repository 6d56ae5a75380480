"""The Generate and Edit raster tabs' state as values (text2earth_qgis/forms.py): Reuse
settings is the inverse of a run. Judged on the engine's own request schema (what it accepts,
which level it picks) and on the fields a rerun must keep."""

from __future__ import annotations

import dataclasses
import math

import pytest
from pyproj import Transformer

from engine.service.schemas import EditJob, ExtendJob, GenerateJob
from text2earth_qgis.core.contract import scale
from text2earth_qgis.core.job_spec import AUTO, LEVEL, RESOLUTION
from text2earth_qgis.forms import FORM_KEY, EditForm, GenerateForm, engine_job

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


# ----- the Edit raster tab ---------------------------------------------------------------------

RASTER = "/data/Ortho photos/RGB.byte.tif"  # a path with a space, as users have them
SQUARE = {"type": "Polygon", "coordinates": [[[447010.0, 5411010.0], [447100.0, 5411010.0],
                                              [447100.0, 5411100.0], [447010.0, 5411100.0],
                                              [447010.0, 5411010.0]]]}
EDITS = [
    EditForm("a park with trees", RASTER, seed=11, steps=3),
    EditForm("a lake", RASTER, negative_prompt="boats", level=16, seed=0, guidance=5.0,
             model="/models/inpaint", dilate=0, feather=12, fill_nodata=True),
    EditForm("farmland", RASTER, side="east", distance_m=250.0, seed=7, dilate=None,
             feather=None, fill_nodata=None),
    EditForm("the sea", RASTER, side="all", distance_m=12.5, level=12, seed=3, dilate=None,
             feather=None, fill_nodata=None),
]


def edit_job(form: EditForm) -> dict:
    return form.to_job([SQUARE], "EPSG:32632") if form.side is None else form.to_job()


@pytest.mark.parametrize("form", EDITS, ids=lambda f: f.prompt[:12])
def test_reusing_an_edit_is_the_inverse_of_its_run(form):
    job = edit_job(form)
    back = EditForm.from_job(job)
    assert back == form
    # The mask is the run's: it goes back as it came (a MultiPolygon in the raster's CRS).
    rerun = back.to_job([job["mask"]], job["mask_crs"]) if form.side is None else back.to_job()
    assert rerun == job


@pytest.mark.parametrize("form", EDITS, ids=lambda f: f.prompt[:12])
def test_the_engine_accepts_the_edit_sent(form):
    job = edit_job(form)
    schema = ExtendJob if form.side else EditJob
    body = schema.model_validate(job)  # strict, extra fields forbidden
    assert body.type == form.kind and body.raster == RASTER and body.seed == form.seed
    assert body.prompt == form.prompt and body.level == form.level
    if form.side is None:
        assert (body.dilate, body.feather, body.fill_nodata) == (
            form.dilate, form.feather, form.fill_nodata)
        assert body.mask["coordinates"] == [SQUARE["coordinates"]]
    else:
        assert (body.side, body.by) == (form.side, form.distance_m)


def test_a_served_layer_is_edited_from_the_file_drawn_for_the_run():
    served = dataclasses.replace(EDITS[0], raster="")
    job = served.to_job([SQUARE], "EPSG:32632", raster="/out/tiles_rendered_L17.tif")
    assert job["raster"] == "/out/tiles_rendered_L17.tif"
    assert EditForm.from_job(job).raster == "/out/tiles_rendered_L17.tif"


def test_bad_edits_are_said_in_the_users_words():
    with pytest.raises(ValueError, match="type a prompt"):
        dataclasses.replace(EDITS[0], prompt=" ").check()
    with pytest.raises(ValueError, match="no mask"):
        EDITS[0].to_job([], "EPSG:32632")
    with pytest.raises(ValueError, match="more than 0 m"):
        dataclasses.replace(EDITS[2], distance_m=0.0).to_job()
