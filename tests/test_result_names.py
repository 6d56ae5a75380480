"""The names results go by (text2earth_qgis/core/result_names.py): what differs first, so
names cut at the Layers panel's width still tell results apart; Text2Earth and "pipeline
check" (demo weights: never to be taken for imagery) last, always there."""

from __future__ import annotations

import pytest

from text2earth_qgis.core.candidates import Candidate, candidate_job
from text2earth_qgis.core.edit_spec import EditOptions, build_edit_job, build_extend_job
from text2earth_qgis.core.history import HistoryEntry
from text2earth_qgis.core.job_spec import LEVEL, Extent, Resolution, build_job
from text2earth_qgis.core.result_names import (
    file_result_name,
    first_words,
    job_result_name,
    job_title,
)

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
GENERATE = build_job(Extent(0, 0, 100, 100, "EPSG:32632"), "a village among fields",
                     Resolution(mode=LEVEL, level=17), seed=3)
EDIT = build_edit_job("/d/ortho.tif", [SQUARE], "EPSG:32632", EditOptions("a village", seed=1))
EXTEND = build_extend_job("/d/ortho.tif", 500.0, "east", EditOptions("a village", seed=1))
RESTYLE = {**EDIT, "type": "restyle"}  # the Processing algorithm's job: only its type differs
PANEL_CHARS = 24  # about what a docked Layers panel shows of a name at 1366 x 768


def test_names_read_variation_kind_prompt_then_text2earth():
    assert job_result_name(GENERATE) == "scene: a village among fields — Text2Earth (synthetic)"
    assert job_result_name(GENERATE, pipeline_check=True, variation=(2, 3)) == (
        "2 of 3, scene: a village among fields — Text2Earth (pipeline check)")
    assert job_result_name(EDIT) == "edit: a village — Text2Earth (synthetic)"
    assert job_result_name(EXTEND, True) == "extend: a village — Text2Earth (pipeline check)"
    assert job_result_name(RESTYLE) == "restyle: a village — Text2Earth (synthetic)"


def test_results_of_one_prompt_differ_where_the_panel_cuts_them():
    names = [job_result_name(GENERATE, True, (rank, 3)) for rank in (1, 2, 3)]
    names += [job_result_name(job, True) for job in (GENERATE, EDIT, EXTEND, RESTYLE)]
    shown = [name[:PANEL_CHARS] for name in names]
    assert len(set(shown)) == len(names), shown


@pytest.mark.parametrize("check", [True, False])
def test_every_name_says_text2earth_and_what_it_is(check):
    long = {**GENERATE, "prompt": "dense green forest with a winding river " * 5}
    for job in (GENERATE, EDIT, EXTEND, RESTYLE, long, {**GENERATE, "prompt": ""}):
        name = job_result_name(job, check, (1, 2))
        assert "Text2Earth" in name
        assert name.endswith("Text2Earth (pipeline check)") is check
        assert ("pipeline check" in name) is check and ("synthetic" in name) is not check
    assert job_result_name({**GENERATE, "prompt": "  "}).startswith("scene: no prompt — ")


def test_a_long_prompt_keeps_its_first_whole_words():
    assert first_words("dense green forest with a winding river " * 5) == (
        "dense green forest with a winding river…")
    assert first_words("a   river\nand   fields") == "a river and fields"
    assert first_words("x" * 50, limit=10) == "x" * 10 + "…"
    assert len(job_result_name({**GENERATE, "prompt": "farmland " * 20})) < 80


def test_a_variation_keeps_its_kind_and_the_history_titles_like_the_layer():
    one = candidate_job({**GENERATE, "candidates": 3},
                        Candidate(index=1, seed=77, score=None, path=None))
    assert job_result_name(one).startswith("scene: a village among fields")
    entry = HistoryEntry(prompt="a village", seed=1, level=17, when="2026-12-07T09:00:00",
                         path="/d/x.tif", bbox=[], crs="EPSG:32632", job=EDIT)
    assert entry.label.splitlines()[0] == job_title(EDIT) == "edit: a village"


def test_batch_files_are_named_by_their_id_and_tag():
    assert file_result_name("/out/west.pipeline-check.tif") == (
        "scene: west — Text2Earth (pipeline check)")
    assert file_result_name("/out/east.tif") == "scene: east — Text2Earth (synthetic)"
