"""`generate --candidates N`: N images ranked by Git-RSCLIP, the best written, all recorded.

Scores are checked against transformers' own SigLIP run on the files as written (rasterio)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rank_support
import rasterio
from rank_support import read_rgb, reference_probabilities

from engine.cli import main
from engine.jobs.candidates import candidate_path, candidate_seeds
from engine.jobs.generate import GenerateRequest, generate
from engine.quality.rank_model import load_rank_model

tiny_rank = rank_support.tiny_rank  # the shared fixture
BBOX = (447000.0, 5411000.0, 447150.0, 5411150.0)  # 150 m: one 256 px canvas at level 17
PROMPT = "a harbor with ships"


@pytest.fixture(scope="module")
def ranker(tiny_rank):
    return load_rank_model(str(tiny_rank))


def request(out: Path, **kw) -> GenerateRequest:
    return GenerateRequest(bbox=BBOX, crs="EPSG:32632", prompt=PROMPT, out=out, level=17,
                           seed=11, steps=2, **kw)


def tags(path) -> dict:
    with rasterio.open(path) as src:
        return src.tags()


def test_three_candidates_keep_the_highest_scoring(t2i_model, ranker, tiny_rank, tmp_path):
    out = tmp_path / "best.tif"
    result = generate(request(out, candidates=3, keep_candidates=True, ranker=ranker), t2i_model)
    files = {c.index: c.path for c in result.candidates}
    assert result.path == out and all(p.is_file() for p in files.values())
    assert sorted(files.values()) == sorted([out] + [candidate_path(out, c.index)
                                                    for c in result.candidates[1:]])
    pixels = {k: read_rgb(p) for k, p in files.items()}
    reference = {k: reference_probabilities(tiny_rank, [px], [PROMPT])[0, 0]
                 for k, px in pixels.items()}
    best = max(reference, key=reference.get)
    assert files[best] == out  # the file at the output is the highest-scoring candidate
    assert result.score == pytest.approx(reference[best], abs=1e-3)
    assert float(tags(out)["TEXT2EARTH_RSCLIP_SCORE"]) == pytest.approx(reference[best], abs=1e-3)
    # Different seeds give different images (else the ranking would be empty).
    assert not np.array_equal(pixels[1], pixels[2])
    seeds = candidate_seeds(11, 3)
    assert seeds[0] == 11 and len(set(seeds)) == 3
    recorded = json.loads(tags(out)["TEXT2EARTH_CANDIDATES"])
    assert [e["index"] for e in recorded] == [c.index for c in result.candidates]
    assert [e["score"] for e in recorded] == sorted((e["score"] for e in recorded), reverse=True)
    for entry in recorded:
        assert entry["seed"] == seeds[entry["index"] - 1]
        assert entry["score"] == pytest.approx(reference[entry["index"]], abs=1e-3)
        path = files[entry["index"]]
        assert int(tags(path)["TEXT2EARTH_SEED"]) == entry["seed"]


def test_candidates_are_deterministic_and_equal_their_seeds_single_runs(
        t2i_model, ranker, tmp_path):
    first = generate(request(tmp_path / "a.tif", candidates=3, ranker=ranker), t2i_model)
    repeat = generate(request(tmp_path / "r.tif", candidates=3, ranker=ranker), t2i_model)
    assert np.array_equal(read_rgb(first.path), read_rgb(repeat.path))
    assert [(c.index, c.seed, c.score) for c in first.candidates] == [
        (c.index, c.seed, c.score) for c in repeat.candidates]
    assert [c.path for c in first.candidates[1:]] == [None, None]  # not kept
    assert not candidate_path(first.path, 2).exists()
    # One at a time: the same ranking, the same images up to the batch size's rounding.
    apart = generate(request(tmp_path / "b.tif", candidates=3, ranker=ranker,
                             window_batch=1), t2i_model)
    assert [c.index for c in apart.candidates] == [c.index for c in first.candidates]
    diff = np.abs(read_rgb(first.path).astype(int) - read_rgb(apart.path).astype(int))
    assert diff.max() <= 2
    # Each candidate is its seed's plain job: the best, run alone with its seed.
    alone = generate(replace(request(tmp_path / "alone.tif"), seed=apart.seed), t2i_model)
    assert np.array_equal(read_rgb(alone.path), read_rgb(apart.path))


def test_without_rank_model_all_are_kept_in_order(t2i_model, tmp_path):
    out = tmp_path / "plain.tif"
    result = generate(request(out, candidates=2), t2i_model)
    assert [c.index for c in result.candidates] == [1, 2]
    assert result.score is None and result.path == out
    assert result.candidates[1].path == candidate_path(out, 2) and candidate_path(out, 2).exists()
    assert "TEXT2EARTH_RSCLIP_SCORE" not in tags(out)


def test_one_output_gets_its_score(t2i_model, ranker, tiny_rank, tmp_path):
    result = generate(request(tmp_path / "one.tif", ranker=ranker), t2i_model)
    want = reference_probabilities(tiny_rank, [read_rgb(result.path)], [PROMPT])[0, 0]
    assert float(tags(result.path)["TEXT2EARTH_RSCLIP_SCORE"]) == pytest.approx(want, abs=1e-3)
    assert len(result.candidates) == 1 and result.candidates[0].path == result.path
    plain = generate(request(tmp_path / "plain.tif"), t2i_model)
    assert np.array_equal(read_rgb(plain.path), read_rgb(result.path))  # scoring changes nothing


@pytest.mark.parametrize("n", ["0", "9", "x"])
def test_out_of_range_is_one_line(capsys, tiny_t2i, tmp_path, n):
    try:
        code = main(["generate", "--bbox", ",".join(map(str, BBOX)), "--crs", "EPSG:32632",
                     "--prompt", PROMPT, "--model", str(tiny_t2i), "--candidates", n,
                     "--out", str(tmp_path / "x.tif"), "--quiet"])
    except SystemExit as exc:  # argparse: not a number
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "candidates" in err
    assert not list(tmp_path.iterdir())


def test_cli_candidates_with_rank_model(capsys, tiny_t2i, tiny_rank, tmp_path):
    out = tmp_path / "cli.tif"
    code = main(["generate", "--bbox", ",".join(map(str, BBOX)), "--crs", "EPSG:32632",
                 "--prompt", PROMPT, "--model", str(tiny_t2i), "--device", "cpu",
                 "--precision", "fp32", "--steps", "2", "--seed", "3", "--candidates", "2",
                 "--keep-candidates", "--rank-model", str(tiny_rank), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "candidate 1" in err and "candidate 2" in err and "Git-RSCLIP score" in err
    kept = [p for p in tmp_path.iterdir() if p.name != "cli.tif"]
    assert len(kept) == 1 and kept[0].name in ("cli_c1.tif", "cli_c2.tif")
    code = main(["generate", "--bbox", ",".join(map(str, BBOX)), "--crs", "EPSG:32632",
                 "--prompt", PROMPT, "--model", str(tiny_t2i), "--rank-model",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path / "y.tif"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "rank model" in err


def test_scene_candidates_are_whole_scenes_ranked(t2i_model, ranker, tiny_rank, tmp_path):
    """A scene of 2 x 2 windows (128 px tiles), built twice by joint denoising, ranked whole."""
    out = tmp_path / "scene.tif"
    result = generate(request(out, candidates=2, keep_candidates=True, ranker=ranker, tile=128,
                              overlap=32, scene_method="joint"), t2i_model)
    assert tags(out)["TEXT2EARTH_WINDOWS"] == "2x2"
    files = {c.index: c.path for c in result.candidates}
    reference = {k: reference_probabilities(tiny_rank, [read_rgb(p)], [PROMPT])[0, 0]
                 for k, p in files.items()}
    best = max(reference, key=reference.get)
    assert files[best] == out and result.score == pytest.approx(reference[best], abs=1e-3)
    other = candidate_path(out, 3 - best)
    assert files[3 - best] == other and other.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, other.name])
    for k, path in files.items():
        t = tags(path)
        assert float(t["TEXT2EARTH_RSCLIP_SCORE"]) == pytest.approx(reference[k], abs=1e-3)
        assert int(t["TEXT2EARTH_SEED"]) == candidate_seeds(11, 2)[k - 1]
        assert t["TEXT2EARTH_SYNTHETIC"] == "yes"
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(str(out))[0]  # re-tagged by a copy: still a valid COG
