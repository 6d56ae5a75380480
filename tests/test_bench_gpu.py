"""`make bench-gpu`'s plumbing on a CPU (engine.bench.gpu --smoke): the rows it prints and
writes, their numbers, the time budget, and the fp16 reference loop it compares against.

The figures themselves need a lent GPU machine (README, "GPU figures")."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from engine.bench import gpu
from engine.bench.baseline import bare_loop, build_model

ROW_KEYS = {"row", "size", "steps", "repeats", "s_per_image", "s_per_image_min", "it_per_s",
            "peak_memory_mib", "warm_up_s"}
ROWS = ["reference fp32 eager", "engine fp32 eager", "engine fp32 compiled"]


def test_smoke_prints_and_writes_each_row_with_consistent_numbers(tmp_path, capsys):
    out = tmp_path / "bench-gpu.json"
    start = time.perf_counter()
    rc = gpu.main(["--smoke", "--sizes", "64", "--repeats", "2", "--json", str(out)])
    wall_s = time.perf_counter() - start
    printed = capsys.readouterr().out
    assert rc == 0, printed
    last_line = json.loads(printed.strip().splitlines()[-1])
    written = json.loads(out.read_text())
    assert written == last_line
    assert written["complete"] and written["skipped"] == []
    assert written["accelerate"]["compiled"] and not written["accelerate_eager"]["compiled"]
    assert [r["row"] for r in written["rows"]] == ROWS
    for row in written["rows"]:
        assert set(row) == ROW_KEYS, row
        assert (row["size"], row["steps"], row["repeats"]) == (64, 2, 2)
        assert row["s_per_image"] > 0 and row["peak_memory_mib"] > 0 and row["warm_up_s"] > 0
        assert 0 < row["s_per_image_min"] <= row["s_per_image"]
        assert row["it_per_s"] == pytest.approx(2 / row["s_per_image"], rel=0.01, abs=0.01)
        # the table line shows the same figures
        assert f"{row['s_per_image']:.3f}" in next(
            line for line in printed.splitlines() if line.strip().startswith(row["row"]))
    # every timed image ran inside this call: the figures are not made up
    spent = sum(r["warm_up_s"] + r["repeats"] * r["s_per_image_min"] for r in written["rows"])
    assert spent <= wall_s
    assert "anchors: SD2.1 512 px x 50 steps on an H100" in printed


def test_rows_past_the_budget_are_skipped_with_a_line_each(tmp_path, capsys):
    out = tmp_path / "bench-gpu.json"
    rc = gpu.main(["--smoke", "--sizes", "64", "--budget-s", "0.001", "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["rows"] == [] and result["complete"]
    assert [s["row"] for s in result["skipped"]] == ROWS
    for name in ROWS:
        assert f"skipped: {name} 64 px: needs about" in printed


def test_out_folder_gets_the_json(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu.default_json_path() == tmp_path / "bench-gpu.json"
    monkeypatch.setenv("OUT", str(tmp_path / "scene.tif"))  # the Makefile's own OUT: a file
    assert gpu.default_json_path() is None


def test_bad_sizes_are_refused_in_words(capsys):
    with pytest.raises(SystemExit):
        gpu.main(["--smoke", "--sizes", "250"])
    assert "positive multiple of 8" in capsys.readouterr().err


def test_fp16_reference_loop_decodes_with_the_fp32_vae_at_the_asked_size():
    """Under fp16 the UNet and text encoder are half and the VAE stays fp32 (as the engine
    keeps it): the bare loop must hand it fp32 latents, at any size."""
    model = build_model(False, "cpu", "fp16")
    assert model.pipeline.vae.dtype != model.pipeline.unet.dtype
    image = bare_loop(model.pipeline, "a park", 1, 1, size=64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
