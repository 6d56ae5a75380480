"""Stdlib: the prompt library per level (resources/prompt_library.json), for the dock's examples
and `text2earth prompts --level L`; one reader for both (part of the engine contract)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .scale import LEVELS, MAX_LEVEL, MIN_LEVEL

# The plugin's resources/ folder: the engine finds its shared files (this library, the label
# lists) through this one path, whichever copy of the plugin it runs beside.
RESOURCES = Path(__file__).resolve().parents[2] / "resources"
LIBRARY_FILE = RESOURCES / "prompt_library.json"
LIBRARY_VERSION = 1
# "git10m": a Git-10M-style caption; "chatearthnet": a ChatEarthNet-style land-cover description
# (Sentinel-2-like scales, so levels 13-14 only).
STYLES = ("git10m", "chatearthnet")
CHATEARTHNET_LEVELS = (13, 14)


@dataclass(frozen=True)
class LibraryPrompt:
    text: str
    style: str  # "git10m" (Git-10M-style caption) or "chatearthnet" (land-cover description)
    level: int


def load_library(path: Path = LIBRARY_FILE) -> dict[int, list[LibraryPrompt]]:
    """Level -> its prompts, in the file's order."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        int(level): [LibraryPrompt(p["text"], p["style"], int(level)) for p in prompts]
        for level, prompts in data["levels"].items()
    }


def examples_for_level(level: int, path: Path = LIBRARY_FILE) -> list[str]:
    """The prompts written for this level (empty for a level the library does not cover)."""
    return [p.text for p in load_library(path).get(int(level), [])]


def prompts_for_level(level: int, style: str | None = None,
                      path: Path = LIBRARY_FILE) -> list[LibraryPrompt]:
    """This level's prompts, of one style or all, in the file's order."""
    return [p for p in load_library(path).get(int(level), []) if style in (None, p.style)]


def library_problems(data: object) -> list[str]:
    """What is wrong with a parsed library file, one line each (empty: it is valid).

    The rules: version 1; "levels" maps each level 10..18 (decimal strings) to a non-empty
    list of {"text", "style"}; text is a non-empty single line; style is one of STYLES;
    ChatEarthNet-style prompts only at Sentinel-2-like levels; no prompt twice in a level.
    """
    if not isinstance(data, dict):
        return ["the library is not a JSON object"]
    problems = []
    if data.get("version") != LIBRARY_VERSION:
        problems.append(f"version is {data.get('version')!r}, expected {LIBRARY_VERSION}")
    levels = data.get("levels")
    if not isinstance(levels, dict):
        return problems + ['"levels" is missing or not an object']
    for key in levels:
        if not (isinstance(key, str) and key.isdigit() and int(key) in LEVELS):
            problems.append(f"level {key!r} is not one of {MIN_LEVEL}..{MAX_LEVEL}")
    for level in LEVELS:
        prompts = levels.get(str(level))
        if not isinstance(prompts, list) or not prompts:
            problems.append(f"level {level} has no prompts")
            continue
        seen = set()
        for i, prompt in enumerate(prompts):
            where = f"level {level} prompt {i + 1}"
            if not isinstance(prompt, dict):
                problems.append(f"{where} is not an object")
                continue
            text, style = prompt.get("text"), prompt.get("style")
            if not isinstance(text, str) or not text.strip() or "\n" in text:
                problems.append(f"{where}: text must be one non-empty line")
            elif text in seen:
                problems.append(f"{where}: repeated")
            else:
                seen.add(text)
            if style not in STYLES:
                problems.append(f"{where}: style {style!r} is not one of {', '.join(STYLES)}")
            elif style == "chatearthnet" and level not in CHATEARTHNET_LEVELS:
                problems.append(f"{where}: ChatEarthNet-style prompts are for levels "
                                f"{CHATEARTHNET_LEVELS[0]}-{CHATEARTHNET_LEVELS[-1]} only")
    return problems
