"""The dock's example prompts for a level: the prompt library's for that level
(core/contract/prompt_library.py), else the general list in resources/example_prompts.txt.
Stdlib."""

from __future__ import annotations

from pathlib import Path

from .contract.prompt_library import LIBRARY_FILE, examples_for_level

FALLBACK_FILE = Path(__file__).resolve().parents[1] / "resources" / "example_prompts.txt"


def general_examples(path: Path = FALLBACK_FILE) -> list[str]:
    """One prompt a line; '#' lines are comments."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def examples_for(level: int | None, library: Path = LIBRARY_FILE,
                 fallback: Path = FALLBACK_FILE) -> list[str]:
    """The library's prompts written for ``level``; the general list when it has none (or
    cannot be read: a broken file must not empty the dock's examples)."""
    texts: list[str] = []
    if level is not None:
        try:
            texts = examples_for_level(level, library)
        except (OSError, ValueError, KeyError, TypeError):
            texts = []
    return texts or general_examples(fallback)
