"""The names results go by in QGIS (the Layers panel, the history, Processing's layers and
groups). Stdlib only.

The Layers panel cuts a name at its width, so what tells one result from the next comes
first: the variation, the kind (scene, edit, extend, restyle), the prompt's first words; what
every result shares, "Text2Earth" and what it is (synthetic, or a pipeline check made with the
demo weights, never to be taken for imagery), comes last:

    2 of 3, scene: a village among fields — Text2Earth (pipeline check)
    edit: a park with trees — Text2Earth (synthetic)
"""

from __future__ import annotations

from pathlib import Path

from .job_spec import PIPELINE_CHECK_SUFFIX

APP = "Text2Earth"
SYNTHETIC, PIPELINE_CHECK = "synthetic", "pipeline check"
SEPARATOR = " — "
# The engine's job types in a user's words; a generation is a scene, however many windows.
KINDS = {"generate": "scene", "edit": "edit", "extend": "extend", "restyle": "restyle"}
WORDS_LIMIT = 40  # characters of the prompt; the whole prompt is in the layer's metadata
NO_PROMPT = "no prompt"


def first_words(text: str, limit: int = WORDS_LIMIT) -> str:
    """``text`` on one line, cut after its last whole word within ``limit`` characters."""
    words = " ".join(text.split())
    if len(words) <= limit:
        return words
    cut = words[:limit]
    if " " in cut and words[limit] != " ":
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-") + "…"


def kind_of(job: dict) -> str:
    """A job's kind in a user's words: 'scene', 'edit', 'extend', 'restyle'."""
    kind = job.get("type") or "generate"
    return KINDS.get(kind, str(kind))


def result_title(kind: str, words: str, variation: tuple[int, int] | None = None) -> str:
    """What tells a result apart: '2 of 3, scene: a village among fields'."""
    title = f"{kind}: {first_words(words) or NO_PROMPT}"
    if variation is not None:
        title = f"{variation[0]} of {variation[1]}, {title}"
    return title


def result_name(kind: str, words: str, pipeline_check: bool = False,
                variation: tuple[int, int] | None = None) -> str:
    """A result's layer (or group) name: its title, then Text2Earth and what it is."""
    what = PIPELINE_CHECK if pipeline_check else SYNTHETIC
    return f"{result_title(kind, words, variation)}{SEPARATOR}{APP} ({what})"


def job_title(job: dict, variation: tuple[int, int] | None = None) -> str:
    """The title of the result ``job`` makes (the history's first line)."""
    return result_title(kind_of(job), job.get("prompt") or "", variation)


def job_result_name(job: dict, pipeline_check: bool = False,
                    variation: tuple[int, int] | None = None) -> str:
    """The layer name of the result ``job`` made (``variation``: (rank, of), 1 the best)."""
    return result_name(kind_of(job), job.get("prompt") or "", pipeline_check, variation)


def file_result_name(path: str, kind: str = KINDS["generate"]) -> str:
    """The layer name of a file the engine wrote and named (a batch item: its id), a pipeline
    check when the engine tagged its name so."""
    stem = Path(path).stem
    check = stem.endswith(PIPELINE_CHECK_SUFFIX)
    return result_name(kind, stem.removesuffix(PIPELINE_CHECK_SUFFIX), check)
