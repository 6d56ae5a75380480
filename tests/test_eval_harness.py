"""`text2earth eval` end to end on tiny models: captions in each format, generation, FID/KID
against torchmetrics run independently on the written images, CLIP scores against
transformers, the per-level breakdown, the PNGs, and one clear line for each bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_eval_metrics import TinyFeatures, random_images, write_tiny_clip

from engine.cli import main
from engine.errors import InputError
from engine.quality import fid as fid_metrics
from engine.quality.captions import read_captions

SIZE = 64
CAPTIONS = [
    "17_GOOGLE_LEVEL_dense residential area with tree-lined streets",
    "17_GOOGLE_LEVEL_a parking lot full of cars",
    "17_GOOGLE_LEVEL_tennis courts next to a school",
    "12_GOOGLE_LEVEL_a mountain range with snow on the peaks",
    "12_GOOGLE_LEVEL_a river meandering through farmland",
]


# --- captions -------------------------------------------------------------------------------

def test_captions_txt_numbers_lines_and_reads_level_prefixes(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("# a comment\n17_GOOGLE_LEVEL_a park\n\n  a lake  \n", encoding="utf-8")
    captions = read_captions(path)
    assert [(c.id, c.text, c.level) for c in captions] == [("0001", "a park", 17),
                                                           ("0002", "a lake", None)]
    assert captions[0].prompt == "17_GOOGLE_LEVEL_a park" and captions[1].prompt == "a lake"
    assert read_captions(path, default_level=14)[1].level == 14  # only where none is given


def test_captions_csv_json_and_rsicd(tmp_path):
    with open(tmp_path / "c.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerows([["id", "caption", "level"], ["a1", "a park", "16"],
                          ["a2", "13_GOOGLE_LEVEL_fields", ""]])
    assert [(c.id, c.level) for c in read_captions(tmp_path / "c.csv")] == [("a1", 16), ("a2", 13)]
    (tmp_path / "c.json").write_text(json.dumps(["a park", {"id": "x", "caption": "a lake",
                                                             "level": 18}]))
    assert [(c.id, c.text, c.level) for c in read_captions(tmp_path / "c.json")] == [
        ("0001", "a park", None), ("x", "a lake", 18)]
    rsicd = {"images": [
        {"filename": "airport_1.jpg", "split": "test",
         "sentences": [{"raw": "many planes are parked near a terminal ."}, {"raw": "other"}]},
        {"filename": "beach_2.jpg", "split": "train", "sentences": [{"raw": "a beach ."}]}]}
    (tmp_path / "dataset_rsicd.json").write_text(json.dumps(rsicd))
    captions = read_captions(tmp_path / "dataset_rsicd.json")
    assert [(c.id, c.text) for c in captions] == [
        ("airport_1", "many planes are parked near a terminal .")]
    assert read_captions(tmp_path / "dataset_rsicd.json", split="train")[0].id == "beach_2"


@pytest.mark.parametrize("content, name, expected", [
    ("a\n9_GOOGLE_LEVEL_b\n", "c.txt", "outside the model's 10..18"),
    ("17_GOOGLE_LEVEL_\n", "c.txt", "no text"),
    ("[]", "c.json", "has no captions"),
    ('[{"id": "a", "caption": "x"}, {"id": "a", "caption": "y"}]', "c.json", "appears twice"),
    ('[{"id": "../up", "caption": "x"}]', "c.json", "cannot name an image file"),
    ('[{"caption": "17_GOOGLE_LEVEL_x", "level": 12}]', "c.json", "prefix says level 17"),
    ("id,text\n1,x\n", "c.csv", "'caption' column"),
    ("{not json", "c.json", "not valid JSON"),
])
def test_bad_captions_are_one_line_each(tmp_path, content, name, expected):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_captions(tmp_path / name)
    assert expected in str(err.value) and "\n" not in str(err.value)


# --- end to end -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_rank(tmp_path_factory) -> Path:
    from engine.quality.tiny_rank_model import write_tiny_rank_model

    return write_tiny_rank_model(tmp_path_factory.mktemp("rank") / "rsclip-tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip-tiny")


@pytest.fixture()
def extractor(monkeypatch):
    """The tiny stand-in for Inception-v3, put where the command finds the standard one."""
    network = TinyFeatures()
    monkeypatch.setattr(fid_metrics, "standard_feature_extractor",
                        lambda weights=None, device="cpu": network)
    return network


@pytest.fixture()
def workspace(tmp_path) -> Path:
    (tmp_path / "captions.txt").write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    reference = tmp_path / "reference"
    reference.mkdir()
    for i, image in enumerate(random_images(6, 80, 11)):  # not the eval size: resized
        Image.fromarray(image).save(reference / f"real_{i}.jpg", quality=95)
    return tmp_path


def run_eval(capsys, workspace: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["eval", "--captions", str(workspace / "captions.txt"), "--reference",
                 str(workspace / "reference"), "--out", str(workspace / "report.json"),
                 "--size", str(SIZE), "--device", "cpu", "--quiet", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def folder_features(network, paths: list[Path]) -> torch.Tensor:
    """uint8 batches as torchmetrics expects them, read and resized here with PIL."""
    images = [np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE),
                                                             Image.Resampling.BICUBIC))
              for p in paths]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def test_eval_end_to_end_on_tiny_models(capsys, workspace, extractor, tiny_t2i, tiny_rank,
                                        tiny_clip):
    from torchmetrics.image.fid import FrechetInceptionDistance

    code, out, err = run_eval(capsys, workspace, "--model", str(tiny_t2i), "--precision", "fp32",
                              "--steps", "2", "--seed", "7", "--rank-model", str(tiny_rank),
                              "--clip-model", str(tiny_clip))
    assert code == 0, err
    summary = json.loads(out)
    report = json.loads((workspace / "report.json").read_text())
    assert summary["fid"] == report["fid"]

    images = workspace / "report_images"
    generated = sorted(images.glob("*.png"))
    assert [p.stem for p in generated] == ["0001", "0002", "0003", "0004", "0005"]
    with Image.open(generated[3]) as png:
        assert png.size == (SIZE, SIZE)
        assert png.text["Synthetic"].startswith("yes")
        assert png.text["Prompt"] == CAPTIONS[3] and png.text["Seed"] == "10"
    assert report["generated"]["made_here"]["steps"] == 2

    # FID: torchmetrics running the same extractor on the files, independently of the harness
    reference = FrechetInceptionDistance(feature=extractor)
    reference.update(folder_features(extractor, sorted((workspace / "reference").iterdir())),
                     real=True)
    reference.update(folder_features(extractor, generated), real=False)
    assert report["fid"] == pytest.approx(float(reference.compute()), rel=1e-5)
    assert report["kid"]["subset_size"] == 5 and np.isfinite(report["kid"]["mean"])
    assert report["features"].startswith("custom feature extractor TinyFeatures")

    # CLIP scores: one per image, in 0..100, their mean reported
    for key in ("git_rsclip", "general_clip"):
        values = [im[key] for im in report["images"]]
        assert all(0 <= v <= 100 for v in values)
        assert report["clip_score"][key]["mean"] == pytest.approx(np.mean(values))
        assert report["clip_score"][key]["n"] == 5
    assert report["clip_score"]["reference_images"] is None  # no reference named like a caption

    # per level: the two levels, their counts and score means
    levels = report["levels"]
    assert sorted(levels) == ["12", "17"]
    assert levels["17"]["n_captions"] == 3 and levels["12"]["n_captions"] == 2
    level12 = [im["git_rsclip"] for im in report["images"] if im["level"] == 12]
    assert levels["12"]["git_rsclip"]["mean"] == pytest.approx(np.mean(level12))
    assert levels["12"]["fid"] is None and "at least 2 reference" in levels["12"]["why"]
    assert report["anchor"]["text2earth"] == {"fid": 24.49, "zero_shot_oa_percent": 90.26,
                                              "clip_score": 25.62}

    with Image.open(workspace / "report.scores.png") as plot:
        assert plot.size[1] == 2 * 200  # one panel per scorer
    with Image.open(workspace / "report.samples.png") as grid:
        assert grid.size[0] > 4 * 160

    # read back with --generated: the same numbers without generating
    code, _, err = run_eval(capsys, workspace, "--generated", str(images), "--overwrite",
                            "--rank-model", str(tiny_rank), "--clip-model", str(tiny_clip))
    assert code == 0, err
    again = json.loads((workspace / "report.json").read_text())
    assert again["fid"] == report["fid"] and again["kid"] == report["kid"]
    assert again["generated"]["made_here"] is None
    assert again["clip_score"]["git_rsclip"] == report["clip_score"]["git_rsclip"]


def test_identical_sets_give_fid_zero_and_reference_scores(capsys, workspace, extractor,
                                                           tiny_rank):
    """Captions named like the reference images, and the reference as --generated."""
    names = sorted(p.stem for p in (workspace / "reference").iterdir())
    (workspace / "captions.txt").unlink()
    rows = [{"id": n, "caption": f"1{2 + i % 2}_GOOGLE_LEVEL_scene {i}"}
            for i, n in enumerate(names)]
    (workspace / "captions.json").write_text(json.dumps(rows))
    code = main(["eval", "--captions", str(workspace / "captions.json"), "--reference",
                 str(workspace / "reference"), "--generated", str(workspace / "reference"),
                 "--out", str(workspace / "same.json"), "--size", str(SIZE), "--quiet",
                 "--device", "cpu", "--rank-model", str(tiny_rank)])
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((workspace / "same.json").read_text())
    assert abs(report["fid"]) < 1e-6
    # the real images scored with their own captions: the same numbers as the generated side
    assert report["clip_score"]["reference_images"]["git_rsclip"]["mean"] == pytest.approx(
        report["clip_score"]["git_rsclip"]["mean"])
    assert all(abs(report["levels"][level]["fid"]) < 1e-6 for level in ("12", "13"))
    assert report["clip_score"]["general_clip"] is None
    assert any("general CLIP score skipped" in note for note in report["notes"])


@pytest.mark.parametrize("extra, expected", [
    (["--out", "report.txt"], "must end in .json"),
    (["--generated", "missing_dir"], "generated folder"),
    (["--reference", "nowhere"], "reference folder"),
    (["--size", "30"], "--size must be"),
    (["--rank-model", "/no/such/rank"], "rank model folder"),
])
def test_bad_inputs_are_one_line_and_write_nothing(capsys, workspace, extractor, extra,
                                                   expected, monkeypatch):
    monkeypatch.chdir(workspace)
    before = sorted(p.name for p in workspace.iterdir())
    options = {"--captions": "captions.txt", "--reference": "reference",
               "--out": "report.json", "--device": "cpu"}
    options.update(zip(extra[::2], extra[1::2], strict=True))
    args = ["eval", "--quiet", *(item for pair in options.items() for item in pair)]
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0 and expected in err and err.count("\n") == 1, err
    assert sorted(p.name for p in workspace.iterdir()) == before


def test_missing_fid_weights_stop_before_any_generation(capsys, workspace, tiny_t2i, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    monkeypatch.delenv(fid_metrics.FID_WEIGHTS_ENV, raising=False)
    code, _, err = run_eval(capsys, workspace, "--model", str(tiny_t2i))
    assert code == 3 and fid_metrics.INCEPTION_FILE in err and err.count("\n") == 1
    assert not (workspace / "report_images").exists() and not (workspace / "report.json").exists()


def test_an_existing_report_is_kept_other_settings_are_not_mixed_and_runs_repeat(
        capsys, workspace, extractor, tiny_t2i):
    (workspace / "report.json").write_text("{}")
    code, _, err = run_eval(capsys, workspace, "--model", str(tiny_t2i))
    assert code == 2 and "pass --overwrite" in err
    assert (workspace / "report.json").read_text() == "{}"

    base = ["--model", str(tiny_t2i), "--precision", "fp32", "--steps", "1"]
    assert run_eval(capsys, workspace, *base, "--overwrite")[0] == 0
    first = json.loads((workspace / "report.json").read_text())
    pixels = {p.name: np.asarray(Image.open(p))
              for p in (workspace / "report_images").glob("*.png")}
    for name in ("report.json", "report.scores.png", "report.samples.png"):
        (workspace / name).unlink()
    code, _, err = run_eval(capsys, workspace, *base[:-1], "2")  # other steps, same folder
    assert code == 2 and "other settings" in err and err.count("\n") == 1

    # reproducible: the same settings make the same pixels and the same numbers
    assert run_eval(capsys, workspace, *base, "--overwrite")[0] == 0
    again = json.loads((workspace / "report.json").read_text())
    assert again["fid"] == first["fid"] and again["kid"] == first["kid"]
    assert len(pixels) == 5
    for name, image in pixels.items():
        np.testing.assert_array_equal(np.asarray(Image.open(workspace / "report_images" / name)),
                                      image)


def test_absent_default_scorers_are_skipped_but_a_named_one_must_be_there(
        capsys, workspace, extractor, tmp_path, monkeypatch):
    from engine.quality.rank_model import RANK_MODEL_ENV

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))  # no cached Git-RSCLIP or CLIP
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf" / "hub"))
    monkeypatch.delenv(RANK_MODEL_ENV, raising=False)
    images = workspace / "made"
    images.mkdir()
    for n, image in enumerate(random_images(5, SIZE, 21), 1):
        Image.fromarray(image).save(images / f"{n:04d}.png")
    code, _, err = run_eval(capsys, workspace, "--generated", str(images))
    assert code == 0, err
    report = json.loads((workspace / "report.json").read_text())
    assert report["clip_score"]["git_rsclip"] is None
    assert report["clip_score"]["general_clip"] is None
    assert any(note.startswith("Git-RSCLIP score skipped: lcybuaa/Git-RSCLIP")
               for note in report["notes"])
    assert np.isfinite(report["fid"])  # FID and KID do not need either

    monkeypatch.setenv(RANK_MODEL_ENV, str(tmp_path / "no-such-rank-model"))
    code, _, err = run_eval(capsys, workspace, "--generated", str(images), "--overwrite")
    assert code == 3 and "no-such-rank-model" in err and err.count("\n") == 1
