"""N variations as one engine job: the job's fields, the result's candidates in the engine's
order (best first), their file names, and the Git-RSCLIP score of a result. Stdlib only.

The engine answers a job sent with ``candidates: N, keep_candidates: true`` with
``result["candidates"] = [{"index": K, "seed": s, "score": x|null, "path": p|null}, ...]``
listed best first, and ``result["score"]`` for the written (best) file; each kept file can be
fetched with GET /jobs/{id}/file?candidate=K (client.download(..., candidate=K)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .contract.files import unused_name
from .job_spec import output_name, pipeline_check_name

MAX_CANDIDATES = 8  # the service's limit (1..8)
SCORE_TAG = "TEXT2EARTH_RSCLIP_SCORE"
SEED_TAG = "TEXT2EARTH_SEED"
SCORE_HELP = ("how well the image matches the prompt, 0 to 1 (Git-RSCLIP, the model's "
              "companion image-text model)")


@dataclass(frozen=True)
class Candidate:
    index: int  # 1-based, in the order the engine generated them
    seed: int | None
    score: float | None  # None: the engine had no rank model
    path: str | None  # the engine's file; None: not kept


def candidate_fields(count: int) -> dict:
    """The job fields for ``count`` variations; none for one (older engines know no field)."""
    if not 1 <= int(count) <= MAX_CANDIDATES:
        raise ValueError(f"choose between 1 and {MAX_CANDIDATES} variations")
    return {} if count == 1 else {"candidates": int(count), "keep_candidates": True}


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def result_score(result: dict | None) -> float | None:
    """The result's Git-RSCLIP score: its "score", else the file's TEXT2EARTH_RSCLIP_SCORE tag."""
    result = result or {}
    score = _number(result.get("score"))
    if score is None:
        score = _number((result.get("tags") or {}).get(SCORE_TAG))
    return score


def score_text(score: float | None) -> str:
    """'match 0.83' for a thumbnail or a history line; '' without a score."""
    return "" if score is None else f"match {score:.2f}"


def candidates_of(result: dict) -> list[Candidate]:
    """The result's candidates as the engine lists them (best first); a result without the
    list (one image, or an older engine) is its own single candidate."""
    raw = result.get("candidates")
    if not isinstance(raw, list) or not raw:
        return [Candidate(1, result.get("seed"), result_score(result), result.get("path"))]
    out = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int):
            continue
        seed = entry.get("seed")
        path = entry.get("path")
        out.append(Candidate(entry["index"], seed if isinstance(seed, int) else None,
                             _number(entry.get("score")),
                             path if isinstance(path, str) and path else None))
    return out


def candidate_job(job: dict, candidate: Candidate) -> dict:
    """The request that remakes this one variation: its own seed, no candidates."""
    one = {k: v for k, v in job.items() if k not in ("candidates", "keep_candidates")}
    if candidate.seed is not None:
        one["seed"] = candidate.seed
    return one


def candidate_result(result: dict, candidate: Candidate, path: str | Path) -> dict:
    """The job's result as seen from one delivered variation: its file, seed and score."""
    tags = dict(result.get("tags") or {})
    if candidate.seed is not None:
        tags[SEED_TAG] = str(candidate.seed)
    if candidate.score is not None:
        tags[SCORE_TAG] = f"{candidate.score:.4f}"
    else:
        tags.pop(SCORE_TAG, None)
    return {**result, "path": str(path), "seed": candidate.seed, "score": candidate.score,
            "tags": tags, "candidate": candidate.index}


def candidate_paths(folder: Path, pattern: str, prompt: str, level: int | None,
                    candidates: list[Candidate], pipeline_check: bool = False,
                    when: datetime | None = None,
                    exists: Callable[[Path], bool] = Path.exists) -> list[Path]:
    """One free file name per candidate, from the user's pattern with each one's own seed;
    a counter where names meet each other or a file already there."""
    when = when or datetime.now()
    taken: set[str] = set()
    paths = []
    for candidate in candidates:
        name = output_name(pattern, prompt, candidate.seed, level, when)
        if pipeline_check:
            name = pipeline_check_name(name)
        name = unused_name(name, lambda n: n in taken or exists(folder / n))
        taken.add(name)
        paths.append(folder / name)
    return paths
