"""The captions an evaluation generates from, read from a file in one of four forms.

- ``.txt``: one caption per line (blank lines and lines starting with '#' skipped); ids are the
  line numbers, zero-padded ("0001", ...).
- ``.csv``: a header with ``caption`` and optional ``id`` and ``level`` columns.
- ``.json``: a list of captions (strings) or of objects {"id", "caption", "level"?}, or
  {"captions": that list}; or an RSICD-style (Karpathy) file {"images": [{"filename", "split",
  "sentences": [{"raw"}]}]}: the first sentence of each image of the chosen split, its id the
  file name's stem (so the reference images are matched by id).

A caption may carry Git-10M's level prefix, '17_GOOGLE_LEVEL_a dense city' (or a ``level``
field / ``--level`` for all that have none); the text the models read never includes it.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError
from text2earth_qgis.core.contract.scale import LEVELS, MAX_LEVEL, MIN_LEVEL

# The same prefix engine.model.pipeline strips (kept here too: parsing a captions file must
# not import diffusers).
LEVEL_PREFIX = re.compile(r"^\s*(\d+)_GOOGLE_LEVEL_")
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Caption:
    id: str  # also the image file's stem, in --generated and (when matched) --reference
    text: str  # what the text encoders read: no level prefix
    level: int | None  # Google zoom level, None when the caption gives none

    @property
    def prompt(self) -> str:
        """The prompt the generator gets: the Git-10M form when there is a level."""
        return f"{self.level}_GOOGLE_LEVEL_{self.text}" if self.level else self.text


def _level(value: object, where: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        level = int(str(value).strip())
    except ValueError:
        raise InputError(f"{where}: level {value!r} is not a whole number") from None
    if level not in LEVELS:
        raise InputError(f"{where}: level {level} is outside the model's {MIN_LEVEL}..{MAX_LEVEL}")
    return level


def make_caption(id_: object, raw: object, level: object, default_level: int | None,
                 where: str) -> Caption:
    if not isinstance(raw, str) or not raw.strip():
        raise InputError(f"{where}: the caption is empty")
    ident = str(id_).strip()
    if not SAFE_ID.match(ident):
        raise InputError(f"{where}: id {ident!r} cannot name an image file (use letters, digits, "
                         "'.', '_' or '-')")
    match = LEVEL_PREFIX.match(raw)
    prefix_level = _level(match.group(1), where) if match else None
    text = raw[match.end():].strip() if match else raw.strip()
    if not text:
        raise InputError(f"{where}: the caption has a level prefix but no text")
    field_level = _level(level, where)
    if prefix_level and field_level and prefix_level != field_level:
        raise InputError(f"{where}: the prefix says level {prefix_level} but the level field "
                         f"says {field_level}")
    return Caption(ident, " ".join(text.split()), prefix_level or field_level or default_level)


def _from_txt(path: Path, default_level: int | None) -> list[Caption]:
    numbered = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if line.strip() and not line.lstrip().startswith("#")]
    width = max(4, len(str(len(numbered))))
    return [make_caption(str(i).zfill(width), line, None, default_level, f"{path.name} line {n}")
            for i, (n, line) in enumerate(numbered, 1)]


def _from_csv(path: Path, default_level: int | None) -> list[Caption]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "caption" not in rows[0]:
        raise InputError(f"{path.name}: a CSV of captions needs a header with a 'caption' column")
    width = max(4, len(str(len(rows))))
    return [make_caption(row.get("id") or str(i).zfill(width), row["caption"], row.get("level"),
                         default_level, f"{path.name} row {i}")
            for i, row in enumerate(rows, 1)]


def _from_json(path: Path, default_level: int | None, split: str) -> list[Caption]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{path.name} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        chosen = [im for im in data["images"] if isinstance(im, dict) and im.get("split") == split]
        if not chosen:
            raise InputError(f"{path.name}: no image of split {split!r} (see --split)")
        return [make_caption(Path(str(im.get("filename", ""))).stem,
                             (im.get("sentences") or [{}])[0].get("raw"), None, default_level,
                             f"{path.name} image {im.get('filename')!r}") for im in chosen]
    items = data.get("captions") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputError(f"{path.name}: expected a list of captions, {{'captions': [...]}} or "
                         "an RSICD-style {'images': [...]}")
    width = max(4, len(str(len(items))))
    captions = []
    for i, item in enumerate(items, 1):
        where = f"{path.name} item {i}"
        if isinstance(item, str):
            captions.append(make_caption(str(i).zfill(width), item, None, default_level, where))
        elif isinstance(item, dict):
            captions.append(make_caption(item.get("id", str(i).zfill(width)), item.get("caption"),
                                         item.get("level"), default_level, where))
        else:
            raise InputError(f"{where} is neither a caption nor an object with one")
    return captions


def read_captions(path: str | Path, default_level: int | None = None,
                  split: str = "test") -> list[Caption]:
    """The captions in ``path`` in file order; every fault is one InputError line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"captions file {path} does not exist")
    if default_level is not None:
        default_level = _level(default_level, "--level")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            captions = _from_csv(path, default_level)
        elif suffix == ".json":
            captions = _from_json(path, default_level, split)
        else:
            captions = _from_txt(path, default_level)
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not UTF-8 text") from None
    if not captions:
        raise InputError(f"{path.name} has no captions")
    seen: set[str] = set()
    for caption in captions:
        if caption.id in seen:
            raise InputError(f"{path.name}: id {caption.id!r} appears twice")
        seen.add(caption.id)
    return captions
