"""Stdlib: the prompt library per level (resources/prompt_library.json), for the dock's examples
and `text2earth prompts --level L`; one reader for both (part of ENGINE_CONTRACT)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

LIBRARY_FILE = Path(__file__).resolve().parents[1] / "resources" / "prompt_library.json"


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
