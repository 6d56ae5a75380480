"""`text2earth score`: transformers' SigLIP probability for a raster, or its windows' mean."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rank_support
import rasterio
from rank_support import read_rgb, reference_probabilities
from rasterio.transform import from_origin

from engine.cli import main
from engine.quality.rank_model import RANK_MODEL_ENV

tiny_rank = rank_support.tiny_rank  # the shared fixture


def write_raster(path, pixels: np.ndarray, count: int = 3) -> str:
    h, w = pixels.shape[:2]
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(500000, 4600000, 0.6, 0.6)) as dst:
        dst.write(np.moveaxis(pixels[..., :count], 2, 0))
    return str(path)


def run_score(capsys, *args) -> tuple[int, dict | None, str]:
    code = main(["score", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_small_raster_score_is_transformers_probability(tiny_rank, tmp_path, capsys):
    rng = np.random.default_rng(5)
    path = write_raster(tmp_path / "small.tif", rng.integers(0, 256, (200, 230, 3), np.uint8))
    prompt = "an airport with two runways"
    code, result, err = run_score(capsys, "--raster", path, "--prompt",
                                  f"17_GOOGLE_LEVEL_{prompt}", "--rank-model", str(tiny_rank))
    assert code == 0, err
    want = reference_probabilities(tiny_rank, [read_rgb(path)], [prompt])[0, 0]
    assert result["score"] == pytest.approx(want, abs=1e-3)
    assert result["method"] == "single" and result["windows"] == 1
    assert result["prompt"] == prompt  # the level prefix is not part of what is scored


def test_large_raster_is_the_mean_over_model_sized_windows(tiny_rank, tmp_path, capsys):
    rng = np.random.default_rng(6)
    left = rng.integers(0, 120, (256, 256, 3), np.uint8)
    right = rng.integers(100, 256, (256, 256, 3), np.uint8)
    path = write_raster(tmp_path / "wide.tif", np.concatenate([left, right], axis=1))
    prompt = "farmland with green fields"
    code, result, err = run_score(capsys, "--raster", path, "--prompt", prompt,
                                  "--rank-model", str(tiny_rank))
    assert code == 0, err
    halves = reference_probabilities(tiny_rank, [left, right], [prompt])[:, 0]
    assert result["method"] == "window_mean" and result["windows"] == 2
    assert result["window_size"] == 256
    assert result["window_scores"] == pytest.approx(list(halves), abs=1e-3)
    assert result["score"] == pytest.approx(halves.mean(), abs=1e-3)
    assert "mean" in result["about"]


def test_bad_inputs_give_one_line(tiny_rank, tmp_path, capsys, monkeypatch):
    gray = write_raster(tmp_path / "gray.tif", np.zeros((64, 64, 3), np.uint8), count=1)
    code, _, err = run_score(capsys, "--raster", gray, "--prompt", "a lake",
                             "--rank-model", str(tiny_rank))
    assert code == 2 and "R, G, B" in err and err.count("\n") == 1
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
    monkeypatch.delenv(RANK_MODEL_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code, _, err = run_score(capsys, "--raster", rgb, "--prompt", "a lake", "--offline")
    assert code == 3 and "--rank-model" in err and RANK_MODEL_ENV in err
    assert err.count("\n") == 1
    code, _, err = run_score(capsys, "--raster", str(tmp_path / "none.tif"), "--prompt", "x",
                             "--rank-model", str(tiny_rank))
    assert code == 2 and "does not exist" in err
