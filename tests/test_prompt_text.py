"""What a prompt may hold (issue 22, item 10): one rule for the CLI, the service and the
batch (engine.jobs.prompt_text), and a truncation warning of one short line."""

from __future__ import annotations

import warnings

import pytest

from engine.errors import InputError
from engine.jobs.prompt_text import MAX_PROMPT_CHARS, check_prompt_text
from engine.model.pipeline import PromptTruncatedWarning


@pytest.mark.parametrize("text,words", [
    ("a park\x00", "U+0000 at position 7"),
    ("\x1b[31mred", "U+001B at position 1"),
    ("fields\x7f", "U+007F"),
    ("fields\x85", "U+0085"),  # C1 control (NEL)
    ("a park \ud800", "unpaired surrogate"),
    ("x" * (MAX_PROMPT_CHARS + 1), f"{MAX_PROMPT_CHARS + 1} characters long"),
])
def test_bad_prompts_are_refused_without_echoing_them(text, words):
    with pytest.raises(InputError) as info:
        check_prompt_text(text, "the prompt")
    said = str(info.value)
    assert words in said and len(said) < 200, said


@pytest.mark.parametrize("text", [
    "a park", "a park\nwith a pond,\tsummer\r\n", "Wald bei Köln, 森林", "x" * MAX_PROMPT_CHARS,
    "17_GOOGLE_LEVEL_dense forest",
])
def test_good_prompts_pass_unchanged(text):
    assert check_prompt_text(text) is text


def test_the_service_cap_is_the_shared_one():
    from engine.service.schemas import GenerateJob

    schema = GenerateJob.model_json_schema()["properties"]["prompt"]
    assert schema["maxLength"] == MAX_PROMPT_CHARS


def test_truncation_warning_is_one_short_line(t2i_model):
    pipe = t2i_model.pipeline
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.encode_prompt("green fields and " * 230, None, "cpu", do_cfg=False)  # ~3900 chars
    said = [str(w.message) for w in caught if issubclass(w.category, PromptTruncatedWarning)]
    assert len(said) == 1
    assert "77" in said[0] and "dropped" in said[0]
    assert len(said[0]) < 200 and "\n" not in said[0], said[0]
