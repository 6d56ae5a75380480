"""The generation history of a project: plain JSON, kept with the project. Stdlib only."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

from .candidates import result_score, score_text
from .result_names import job_title

MAX_ENTRIES = 200


@dataclass
class HistoryEntry:
    prompt: str
    seed: int | None
    level: int | None
    when: str  # ISO time, local
    path: str
    bbox: list[float]
    crs: str
    job: dict = field(default_factory=dict)  # the request, for "reuse settings"
    thumbnail_png_b64: str = ""
    score: float | None = None  # Git-RSCLIP: how well the result matches its prompt

    @property
    def label(self) -> str:
        when = self.when.replace("T", " ")[:16]
        score = f", {score_text(self.score)}" if self.score is not None else ""
        title = job_title({"prompt": self.prompt, **self.job})  # as its layer is named
        return (f"{title}\nseed {self.seed}, level {self.level}{score}, "
                f"{when}")


def new_entry(job: dict, result: dict, thumbnail_b64: str = "") -> HistoryEntry:
    return HistoryEntry(
        prompt=job.get("prompt", ""),
        seed=result.get("seed"),
        level=result.get("level"),
        when=datetime.now().isoformat(timespec="seconds"),
        path=result.get("path", ""),
        bbox=list(result.get("bounds") or job.get("bbox") or []),
        crs=result.get("crs_authid") or job.get("crs", ""),
        job=dict(job),
        thumbnail_png_b64=thumbnail_b64,
        score=result_score(result),
    )


def dumps(entries: list[HistoryEntry]) -> str:
    return json.dumps([asdict(e) for e in entries[-MAX_ENTRIES:]])


def loads(text: str) -> list[HistoryEntry]:
    """Entries from a project; anything unreadable is skipped, never fatal."""
    try:
        raw = json.loads(text) if text else []
    except ValueError:
        return []
    entries = []
    for item in raw if isinstance(raw, list) else []:
        try:
            entries.append(HistoryEntry(**item))
        except TypeError:
            continue
    return entries
