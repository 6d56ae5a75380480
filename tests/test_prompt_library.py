"""The prompt library: every level has prompts, the file validates, the reader and
`text2earth prompts` agree, and every prompt reaches the model untruncated."""

from __future__ import annotations

import copy
import json

import pytest

from engine.cli import main
from text2earth_qgis.core.contract import prompt_library, scale

WORLDCOVER = ("tree cover", "shrubland", "grassland", "cropland", "built-up", "bare",
              "snow and ice", "water", "wetland", "mangrove", "moss")


@pytest.fixture(scope="module")
def data() -> dict:
    return json.loads(prompt_library.LIBRARY_FILE.read_text(encoding="utf-8"))


def cli_json(capsys, *args) -> list[dict]:
    assert main(["prompts", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_level_has_git10m_prompts_and_s2_levels_have_land_cover_text():
    library = prompt_library.load_library()
    assert sorted(library) == list(range(10, 19)) == list(scale.LEVELS)
    for level in scale.LEVELS:
        styles = [p.style for p in library[level]]
        assert styles.count("git10m") >= 5, level
        # Sentinel-2's 10 m lies between level 13 (16 m) and 14 (8 m).
        assert ("chatearthnet" in styles) == (level in (13, 14)), level
        assert all(p.level == level for p in library[level])


def test_the_file_validates_and_the_validator_catches_each_fault(data):
    assert prompt_library.library_problems(data) == []
    faults = {
        "version": lambda d: d.update(version=2),
        "level 12 has no prompts": lambda d: d["levels"].pop("12"),
        "not one of 10..18": lambda d: d["levels"].update({"9": [{"text": "x",
                                                                  "style": "git10m"}]}),
        "style 'caption'": lambda d: d["levels"]["17"][0].update(style="caption"),
        "one non-empty line": lambda d: d["levels"]["16"][0].update(text="two\nlines"),
        "repeated": lambda d: d["levels"]["15"].append(dict(d["levels"]["15"][0])),
        "levels 13-14 only": lambda d: d["levels"]["18"][0].update(style="chatearthnet"),
    }
    for expected, spoil in faults.items():
        broken = copy.deepcopy(data)
        spoil(broken)
        problems = prompt_library.library_problems(broken)
        assert any(expected in line for line in problems), (expected, problems)


def test_land_cover_descriptions_name_worldcover_classes():
    for level in (13, 14):
        for p in prompt_library.prompts_for_level(level, "chatearthnet"):
            named = [c for c in WORLDCOVER if c in p.text.lower()]
            assert len(named) >= 3, p.text


def test_the_cli_lists_what_the_reader_reads(capsys, data):
    for level in scale.LEVELS:
        listed = cli_json(capsys, "--level", str(level))
        assert listed == [{"level": level, **p} for p in data["levels"][str(level)]]
        assert main(["prompts", "--level", str(level)]) == 0
        assert capsys.readouterr().out.splitlines() == prompt_library.examples_for_level(level)
    everything = cli_json(capsys)
    assert len(everything) == sum(len(v) for v in data["levels"].values())
    only_s2 = cli_json(capsys, "--style", "chatearthnet")
    assert {p["level"] for p in only_s2} == {13, 14}


def test_prefixed_listing_is_what_the_pipeline_parses_as_the_level(capsys):
    from engine.model.pipeline import split_level_prefix

    assert main(["prompts", "--prefixed", "--level", "12"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [split_level_prefix(line) for line in lines] == [
        (12, text) for text in prompt_library.examples_for_level(12)]


def test_a_level_outside_the_model_is_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["prompts", "--level", "19"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 19" in err


def test_every_prompt_fits_clips_77_tokens(tmp_path):
    """Text2Earth's text encoder reads 77 CLIP tokens; a longer prompt loses its tail."""
    from engine.model.tiny_checkpoint import write_clip_tokenizer

    tokenizer = write_clip_tokenizer(tmp_path / "tok")  # the real CLIP BPE vocabulary
    for prompts in prompt_library.load_library().values():
        for p in prompts:
            assert len(tokenizer(p.text)["input_ids"]) <= 77, p.text
