"""N variations as one engine job, without Qt: the job's fields, the result's candidates in the
engine's order, their delivery (local move or download of /file?candidate=K), their names, and
the Git-RSCLIP score in history. Against tests/fake_service.py, a loopback service answering
as the contracts say (scores given per candidate index, so the expected order is known)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from fake_service import FakeService

from text2earth_qgis.core import history
from text2earth_qgis.core.candidates import (
    Candidate,
    candidate_fields,
    candidate_job,
    candidate_paths,
    candidate_result,
    candidates_of,
    result_score,
    score_text,
)
from text2earth_qgis.core.failure_advice import older_engine_advice
from text2earth_qgis.core.job_spec import Extent, Resolution, build_job
from text2earth_qgis.core.service.client import (
    EngineClient,
    EngineError,
    JobCancelled,
    ServiceError,
)
from text2earth_qgis.core.service.run_job import run_candidates, run_job

EXTENT = Extent(447000, 5411000, 447300, 5411300, "EPSG:32632")
PATTERN = "{date}_{prompt}_s{seed}.tif"
WHEN = datetime(2026, 12, 3, 5, 0, 0)


def job(count: int, seed: int = 40) -> dict:
    return {**build_job(EXTENT, "a village", Resolution("level", 16), seed=seed, steps=2),
            **candidate_fields(count)}


def namer(folder: Path, pattern: str = PATTERN):
    def paths_for(candidates, pipeline_check):
        return candidate_paths(folder, pattern, "a village", 16, candidates, pipeline_check,
                               WHEN)
    return paths_for


def test_one_variation_sends_no_new_field_and_n_ask_for_all_to_be_kept():
    assert candidate_fields(1) == {}
    assert candidate_fields(3) == {"candidates": 3, "keep_candidates": True}
    for bad in (0, 9):
        with pytest.raises(ValueError, match="between 1 and 8 variations"):
            candidate_fields(bad)


@pytest.mark.parametrize("remote", [False, True])
def test_n_variations_are_one_job_delivered_best_first(tmp_path, remote):
    scores = {1: 0.21, 2: 0.93, 3: 0.55}
    out = tmp_path / "out"
    with FakeService(tmp_path / "staging", scores=scores, remote=remote) as service:
        client = EngineClient(service.url)
        result, delivered, problems = run_candidates(client, job(3), namer(out))
    assert problems == []
    assert len(service.jobs) == 1  # one job, not three
    assert service.jobs[0]["candidates"] == 3 and service.jobs[0]["keep_candidates"] is True
    # Best first by score, as the engine lists them: 2 (0.93), 3 (0.55), 1 (0.21).
    assert [c.index for c, _ in delivered] == [2, 3, 1]
    assert [c.score for c, _ in delivered] == [0.93, 0.55, 0.21]
    seeds = [40 + (k - 1) * 1000 for k in (2, 3, 1)]
    assert [c.seed for c, _ in delivered] == seeds
    # Each file holds its own candidate's bytes, under a name with its own seed.
    for (candidate, path), seed in zip(delivered, seeds, strict=True):
        assert path.parent == out
        assert path.name == f"20261203_a-village_s{seed}.tif"
        assert path.read_bytes() == b"II*\0candidate %d of a village" % candidate.index
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for _, p in delivered)
    if remote:
        assert "/jobs/job1/file?candidate=3" in service.requests
        assert "/jobs/job1/file?candidate=1" in service.requests
    else:
        assert list((tmp_path / "staging").iterdir()) == []  # moved, not copied
    assert result_score(result) == 0.93


def test_without_a_rank_model_the_variations_come_in_generation_order(tmp_path):
    with FakeService(tmp_path / "staging", scores=None) as service:
        _, delivered, _ = run_candidates(EngineClient(service.url), job(3),
                                         namer(tmp_path / "out"))
    assert [(c.index, c.score) for c, _ in delivered] == [(1, None), (2, None), (3, None)]


def test_names_never_collide_with_each_other_or_older_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "village.tif").write_bytes(b"older")
    with FakeService(tmp_path / "staging", scores={1: 0.5, 2: 0.4, 3: 0.3}) as service:
        _, delivered, _ = run_candidates(EngineClient(service.url), job(3),
                                         namer(out, "village.tif"))
    assert [p.name for _, p in delivered] == ["village_2.tif", "village_3.tif",
                                              "village_4.tif"]
    assert (out / "village.tif").read_bytes() == b"older"


def test_demo_weight_variations_are_named_pipeline_checks(tmp_path):
    tags = {"TEXT2EARTH_PIPELINE_CHECK": "yes: random demo weights"}
    with FakeService(tmp_path / "staging", scores=None, tags=tags) as service:
        _, delivered, _ = run_candidates(EngineClient(service.url), job(2),
                                         namer(tmp_path / "out"))
    assert all(p.name.endswith(".pipeline-check.tif") for _, p in delivered)


def test_a_variation_the_engine_did_not_keep_is_refused_and_nothing_is_written(tmp_path):
    with FakeService(tmp_path / "staging", scores={1: 0.1, 2: 0.9}, remote=True) as service:
        client = EngineClient(service.url)
        job_id = client.submit({**job(1), "candidates": 2, "keep_candidates": False})["id"]
        listed = candidates_of(client.result(job_id))
        assert [(c.index, c.path is None) for c in listed] == [(2, False), (1, True)]
        with pytest.raises(ServiceError) as info:
            client.download(job_id, tmp_path / "out" / "c1.tif", candidate=1)
        assert info.value.kind == "not_kept" and "was not kept" in info.value.message
        best = client.download(job_id, tmp_path / "out" / "best.tif", candidate=2)
    assert list((tmp_path / "out").iterdir()) == [best]  # no file, no .part left behind
    assert best.read_bytes() == b"II*\0candidate 2 of a village"


def test_one_variation_is_delivered_exactly_as_before(tmp_path):
    with FakeService(tmp_path / "staging", scores={1: 0.7}) as service:
        result, path = run_job(EngineClient(service.url), job(1), tmp_path / "out" / "x.tif")
    assert "candidates" not in service.jobs[0] and "keep_candidates" not in service.jobs[0]
    assert path.read_bytes() == b"II*\0candidate 1 of a village"
    assert [c.index for c in candidates_of(result)] == [1]


def test_a_cancel_at_the_very_end_keeps_no_variation(tmp_path):
    class LateCancel(EngineClient):
        def wait(self, job_id, poll=1.0, timeout=None, on_progress=None):
            return self.result(job_id)

    with FakeService(tmp_path / "staging", scores={1: 0.3, 2: 0.6}) as service:
        with pytest.raises(JobCancelled):
            run_candidates(LateCancel(service.url), job(2), namer(tmp_path / "out"),
                           is_canceled=iter([False, True, True, True]).__next__)
    assert list((tmp_path / "staging").iterdir()) == []
    assert not (tmp_path / "out").exists()


def test_scores_are_read_from_the_result_or_the_files_tags():
    assert result_score({"score": 0.812}) == 0.812
    assert result_score({"score": None, "tags": {"TEXT2EARTH_RSCLIP_SCORE": "0.6042"}}) == 0.6042
    assert result_score({"score": None, "tags": {}}) is None
    assert result_score({"score": True}) is None
    assert result_score({"tags": {"TEXT2EARTH_RSCLIP_SCORE": "nan"}}) is None
    assert score_text(0.8123) == "match 0.81" and score_text(None) == ""


def test_each_variation_keeps_its_own_seed_score_and_request():
    result = {"path": "/s/best.tif", "seed": 1, "score": 0.9,
              "tags": {"TEXT2EARTH_SEED": "1", "TEXT2EARTH_RSCLIP_SCORE": "0.9000",
                       "TEXT2EARTH_PROMPT": "x"}}
    second = Candidate(index=3, seed=2001, score=None, path="/s/best_c3.tif")
    mine = candidate_result(result, second, "/out/b.tif")
    assert mine["path"] == "/out/b.tif" and mine["seed"] == 2001 and mine["score"] is None
    assert mine["tags"]["TEXT2EARTH_SEED"] == "2001"
    assert "TEXT2EARTH_RSCLIP_SCORE" not in mine["tags"]
    assert mine["tags"]["TEXT2EARTH_PROMPT"] == "x" and result["tags"]["TEXT2EARTH_SEED"] == "1"
    again = candidate_job(job(3), second)
    assert again["seed"] == 2001 and "candidates" not in again
    assert "keep_candidates" not in again


def test_history_shows_the_score():
    entry = history.new_entry({"prompt": "lake"}, {"seed": 5, "level": 16, "path": "/x.tif",
                                                   "score": 0.834})
    assert entry.score == 0.834 and "match 0.83" in entry.label
    tagged = history.new_entry({"prompt": "lake"}, {"seed": 5, "level": 16, "tags": {
        "TEXT2EARTH_RSCLIP_SCORE": "0.5"}})
    assert "match 0.50" in tagged.label
    unscored = history.new_entry({"prompt": "lake"}, {"seed": 5, "level": 16})
    assert "match" not in unscored.label
    # Entries saved before scores existed still load.
    old = json.loads(history.dumps([unscored]))
    del old[0]["score"]
    assert history.loads(json.dumps(old))[0].score is None


def test_a_missing_variation_does_not_stop_the_others(tmp_path):
    class Flaky(EngineClient):
        def download(self, job_id, destination, overwrite=False, candidate=None):
            if candidate == 3:
                raise EngineError("the disk is full")
            return super().download(job_id, destination, overwrite, candidate)

    with FakeService(tmp_path / "staging", scores={1: 0.1, 2: 0.2, 3: 0.3}) as service:
        _, delivered, problems = run_candidates(Flaky(service.url), job(3),
                                                namer(tmp_path / "out"))
    assert [c.index for c, _ in delivered] == [2, 1]
    assert len(problems) == 1 and re.match(r"variation 3: the disk is full", problems[0])


def test_an_older_engine_refusing_the_new_fields_is_said_in_a_users_words(tmp_path):
    with FakeService(tmp_path / "staging", scores=None, older=True) as service:
        client = EngineClient(service.url)
        with pytest.raises(ServiceError) as info:
            run_candidates(client, {**job(3), "scene_method": "cascade"},
                           namer(tmp_path / "out"))
        message = older_engine_advice(info.value.errors)
        assert message.startswith("This engine is older than the plugin: it cannot do "
                                  "several variations in one run or cascade scenes yet.")
        assert "choose 1 variation and choose another scene method" in message
        assert "HTTP" not in message and "Extra inputs" not in message
        # One variation, nothing new: the same engine takes it.
        _, path = run_job(client, job(1), tmp_path / "out" / "one.tif")
    assert path.is_file() and not (tmp_path / "out" / "one.tif.part").exists()
    # Any other refusal is left to the engine's own words.
    assert older_engine_advice([{"field": "bbox", "message": "inverted"}]) is None
    assert older_engine_advice([]) is None
