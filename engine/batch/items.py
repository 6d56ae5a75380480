"""Batch items from any OGR vector file of polygons (the layer's CRS, each feature's bounding
box) or a CSV with ``bbox`` and ``crs`` columns; attributes: prompt (required), level or
resolution, seed, variations, negative, id.

A bad row is one :class:`ItemProblem` (one line, in the user's words); the other rows go on.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError

MAX_VARIATIONS = 16
MAX_SEED = 2**32 - 1
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class BatchItem:
    id: str
    bbox: tuple[float, float, float, float]
    crs: str  # as the user gave it (EPSG:XXXX or WKT), checked by pyproj
    prompt: str
    level: int | None = None
    resolution: float | None = None
    seed: int | None = None  # None: derived from the id (so reruns and workers agree)
    variations: int = 1
    negative: str | None = None


@dataclass(frozen=True)
class ItemProblem:
    id: str  # the item's id, or "row N" when it has none yet
    message: str
    kind: str = "bad_input"


def item_seed(item: BatchItem) -> int:
    """The item's seed: given, or a hash of its id, so every run and every worker agrees."""
    if item.seed is not None:
        return item.seed
    return int.from_bytes(hashlib.sha256(item.id.encode()).digest()[:4], "big")


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def _int(value, name: str, low: int, high: int) -> int | None:
    text = _text(value)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise InputError(f"{name} must be a whole number, got {text!r}") from None
    if number != int(number) or not low <= number <= high:
        raise InputError(f"{name} must be a whole number in {low}..{high}, got {text}")
    return int(number)


def _check_crs(crs: str | None) -> str:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    if not crs:
        raise InputError("the extent has no CRS: give the layer (or the crs column) one")
    try:
        CRS.from_user_input(crs)
    except CRSError:
        raise InputError(f"unknown CRS {crs!r}: use EPSG:XXXX, WKT or a PROJ string") from None
    return crs


def make_item(row: int, attrs: dict, bbox, crs: str | None) -> BatchItem:
    """One row's item, or InputError with one line saying what is wrong with it."""
    prompt = _text(attrs.get("prompt"))
    if prompt is None:
        raise InputError("no prompt: every item needs a 'prompt' attribute")
    level = _int(attrs.get("level"), "level", 10, 18)
    resolution_text = _text(attrs.get("resolution"))
    resolution = None
    if resolution_text is not None:
        try:
            resolution = float(resolution_text)
        except ValueError:
            raise InputError(f"resolution must be metres per pixel, got {resolution_text!r}") \
                from None
        if not resolution > 0:
            raise InputError(f"resolution must be positive, got {resolution_text}")
    if level is not None and resolution is not None:
        raise InputError("give level or resolution, not both")
    variations = _int(attrs.get("variations"), "variations", 1, MAX_VARIATIONS) or 1
    seed = _int(attrs.get("seed"), "seed", 0, MAX_SEED)
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (x1 > x0 and y1 > y0):
        raise InputError("the extent is empty (zero width or height)")
    return BatchItem(
        id=_text(attrs.get("id")) or f"item-{row}",
        bbox=(x0, y0, x1, y1), crs=_check_crs(crs), prompt=prompt, level=level,
        resolution=resolution, seed=seed, variations=variations,
        negative=_text(attrs.get("negative")),
    )


def _rows_from_vector(path: Path):
    """(row, attributes, bbox or an error line, CRS) of each feature of the first layer."""
    import pyogrio
    import shapely

    try:
        meta, _, geometry, values = pyogrio.raw.read(path)
    except Exception as exc:  # noqa: BLE001 - GDAL's many ways of saying "not readable"
        raise InputError(f"cannot read {path} as a vector file: {exc}") from None
    names = [str(n).lower() for n in meta["fields"]]
    crs = meta.get("crs")
    if geometry is None:
        raise InputError(f"{path} has no geometries: give polygons (or a CSV with bbox, crs)")
    for index, wkb in enumerate(geometry):
        attrs = {name: column[index] for name, column in zip(names, values, strict=True)}
        shape = shapely.from_wkb(wkb) if wkb is not None else None
        if shape is None or shape.is_empty:
            yield index + 1, attrs, "the geometry is empty", crs
        elif not shape.is_valid:
            why = shapely.is_valid_reason(shape)
            yield index + 1, attrs, f"the geometry is invalid ({why})", crs
        elif shape.geom_type not in ("Polygon", "MultiPolygon"):
            yield index + 1, attrs, f"the geometry is a {shape.geom_type}, not a polygon", crs
        else:
            yield index + 1, attrs, shape.bounds, crs


def _rows_from_csv(path: Path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path} as CSV: {exc}") from None
    for index, raw in enumerate(rows):
        attrs = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
        text = _text(attrs.get("bbox")) or ""
        parts = [p for p in re.split(r"[,;\s]+", text.strip("[]() ")) if p]
        try:
            bbox = tuple(float(p) for p in parts)
        except ValueError:
            bbox = ()
        if len(bbox) != 4:
            bbox = f"bbox must be XMIN,YMIN,XMAX,YMAX, got {text!r}"
        yield index + 2, attrs, bbox, _text(attrs.get("crs"))  # row 1 is the header


def read_items(path: str | Path) -> tuple[list[BatchItem], list[ItemProblem]]:
    """The file's good items and one problem per bad row. Raises InputError only when the
    file as a whole is unusable (missing, unreadable, no rows)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"no items file at {path}")
    rows = _rows_from_csv(path) if path.suffix.lower() == ".csv" else _rows_from_vector(path)
    items: list[BatchItem] = []
    problems: list[ItemProblem] = []
    for row, attrs, bbox, crs in rows:
        label = _text(attrs.get("id")) or f"row {row}"
        if isinstance(bbox, str):
            problems.append(ItemProblem(label, f"{label}: {bbox}"))
            continue
        try:
            item = make_item(row, attrs, bbox, crs)
        except InputError as exc:
            problems.append(ItemProblem(label, f"{label}: {exc}"))
            continue
        if not SAFE_ID.match(item.id):
            problems.append(ItemProblem(label, f"{label}: the id {item.id!r} names the output "
                                               "file: use letters, digits, '.', '_' and '-'"))
            continue
        items.append(item)
    if not items and not problems:
        raise InputError(f"{path} has no items")
    return _without_duplicates(items, problems)


def _without_duplicates(items: list[BatchItem], problems: list[ItemProblem]):
    """Every item of an id used twice is refused: ids name the outputs, and which of the
    two the user meant cannot be guessed."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.id] = counts.get(item.id, 0) + 1
    kept = [item for item in items if counts[item.id] == 1]
    for item_id in sorted(i for i, n in counts.items() if n > 1):
        problems.append(ItemProblem(item_id, f"{item_id}: the id is used by {counts[item_id]} "
                                             "items; ids name the output files, so each must "
                                             "be unique"))
    return kept, problems
