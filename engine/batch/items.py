"""Batch items from any OGR vector file of polygons (the layer's CRS, each feature's bounding
box) or a CSV with ``bbox`` and ``crs`` columns; attributes: prompt (required), level or
resolution, seed, variations, negative, id.

A bad row is one :class:`ItemProblem` (one line, in the user's words); the other rows go on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError
from engine.geo.grid import check_extent_numbers
from engine.jobs.prompt_text import check_prompt_text

MAX_VARIATIONS = 16
MAX_SEED = 2**32 - 1
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Any attribute longer than this is a mistake (a pasted file, a runaway cell), not a prompt
# or a CRS: that row is refused. GDAL's GeoJSON reader refuses a whole file for a value over
# 10 M characters, and csv one over 128 K: such a row is found and refused on its own.
MAX_FIELD_CHARS = 64 * 1024


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


def output_stems(item: BatchItem) -> list[str]:
    """The names (without .tif) of the item's outputs: ``<id>``, or ``<id>_v<K>`` for each
    of its variations."""
    if item.variations == 1:
        return [item.id]
    return [f"{item.id}_v{k}" for k in range(1, item.variations + 1)]


def _size(chars: int) -> str:
    return f"{chars / 2**20:.1f} MB" if chars >= 2**20 else f"{chars / 1024:.0f} KB"


def _bad_value(attrs: dict, encoding: str = "utf-8") -> str | None:
    """What is wrong with a row's raw values, if anything: text that is not in the file's
    encoding (decoded with surrogateescape: its bytes are lone surrogates) or a huge value."""
    for name, value in attrs.items():
        if not isinstance(value, str):
            continue
        if len(value) > MAX_FIELD_CHARS:
            return (f"the {name} value is {_size(len(value))} long; a value holds at most "
                    f"{_size(MAX_FIELD_CHARS)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = ord(value[exc.start]) - 0xDC00
            return (f"the {name} value is not {encoding.upper()} text (byte 0x{byte:02x}): "
                    f"save the file as {encoding.upper()}")
    return None


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
    check_prompt_text(prompt)  # the service's and the CLI's rule: said per row, up front
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
    x0, y0, x1, y1 = check_extent_numbers(bbox)  # which number is NaN, infinite or swapped
    return BatchItem(
        id=_text(attrs.get("id")) or f"item-{row}",
        bbox=(x0, y0, x1, y1), crs=_check_crs(crs), prompt=prompt, level=level,
        resolution=resolution, seed=seed, variations=variations,
        negative=_text(attrs.get("negative")),
    )


def _read_vector(path: Path):
    """pyogrio's (meta, geometries, values) of the first layer, and the feature numbers they
    hold, with ``{row: error line}`` for features refused on their own: a value that is not in
    the layer's encoding, or a GeoJSON value too big for GDAL, would make the whole file
    unreadable."""
    import pyogrio
    from pyogrio.errors import DataSourceError

    try:
        meta, _, geometry, values = pyogrio.raw.read(path)
        return meta, geometry, values, None, {}
    except UnicodeDecodeError:
        # Read every byte as it is (latin-1 maps bytes to characters one to one), then
        # decode each value on its own: only the rows with a bad value are refused.
        encoding = pyogrio.read_info(path).get("encoding") or "utf-8"
        meta, _, geometry, values = pyogrio.raw.read(path, encoding="latin-1")
        values = [_redecode(column, encoding) for column in values]
        meta = {**meta, "encoding": encoding}
        return meta, geometry, values, None, {}
    except DataSourceError:
        if path.suffix.lower() not in (".geojson", ".json"):
            raise
        split = _read_geojson_rows(path)
        if split is None:  # not a FeatureCollection with a bad feature: GDAL's word stands
            raise
        return split


def _redecode(column, encoding: str):
    import numpy as np

    def one(value):
        if not isinstance(value, str):
            return value
        return value.encode("latin-1").decode(encoding, errors="surrogateescape")

    return np.array([one(v) for v in column], dtype=object)


def _read_geojson_rows(path: Path):
    """A FeatureCollection GDAL refuses as a whole: its features with a bad value are
    refused one by one and GDAL reads the rest (so their geometries and CRS are read as
    for any other file). None when no feature is to blame."""
    import pyogrio

    try:
        document = json.loads(path.read_bytes().decode("utf-8-sig", errors="surrogateescape"))
        features = list(document["features"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    kept, rows, refused = [], [], {}
    for index, feature in enumerate(features):
        props = feature.get("properties") if isinstance(feature, dict) else None
        attrs = {str(k).lower(): v for k, v in (props if isinstance(props, dict) else {}).items()}
        bad = _bad_value(attrs)
        if bad is None:
            kept.append(feature)
            rows.append(index + 1)
        else:
            refused[index + 1] = (attrs, bad)
    if not refused:
        return None
    document["features"] = kept
    text = json.dumps(document).encode()
    meta, _, geometry, values = pyogrio.raw.read(io.BytesIO(text))
    return meta, geometry, values, rows, refused


def _rows_from_vector(path: Path):
    """(row, attributes, bbox or an error line, CRS) of each feature of the first layer."""
    import shapely

    try:
        meta, geometry, values, rows, refused = _read_vector(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - GDAL's many ways of saying "not readable"
        raise InputError(f"cannot read {path} as a vector file: {exc}") from None
    names = [str(n).lower() for n in meta["fields"]]
    crs = meta.get("crs")
    encoding = meta.get("encoding") or "utf-8"
    if geometry is None and not refused:
        raise InputError(f"{path} has no geometries: give polygons (or a CSV with bbox, crs)")
    found = [(row, _safe_attrs(attrs), bad, crs) for row, (attrs, bad) in refused.items()]
    for index, wkb in enumerate(geometry if geometry is not None else []):
        row = rows[index] if rows is not None else index + 1
        attrs = {name: column[index] for name, column in zip(names, values, strict=True)}
        bad = _bad_value(attrs, encoding)
        shape = shapely.from_wkb(wkb) if wkb is not None and bad is None else None
        if bad is not None:
            found.append((row, _safe_attrs(attrs), bad, crs))
        elif shape is None or shape.is_empty:
            found.append((row, attrs, "the geometry is empty", crs))
        elif not shape.is_valid:
            why = shapely.is_valid_reason(shape)
            found.append((row, attrs, f"the geometry is invalid ({why})", crs))
        elif shape.geom_type not in ("Polygon", "MultiPolygon"):
            found.append((row, attrs, f"the geometry is a {shape.geom_type}, not a polygon",
                          crs))
        else:
            found.append((row, attrs, shape.bounds, crs))
    return sorted(found, key=lambda one: one[0])


def _safe_attrs(attrs: dict) -> dict:
    """A bad row's attributes as far as its id can label it: the id only when it is short,
    printable text."""
    item_id = attrs.get("id")
    if isinstance(item_id, str) and SAFE_ID.match(item_id):
        return {"id": item_id}
    return {}


def _rows_from_csv(path: Path):
    try:
        # surrogateescape: a row with bytes that are not UTF-8 is refused on its own
        fh = open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise InputError(f"cannot read {path} as CSV: {exc.strerror or exc}") from None
    with fh:
        reader = csv.DictReader(fh)
        try:
            reader.fieldnames  # noqa: B018 - reads the header row
        except (OSError, csv.Error) as exc:
            raise InputError(f"cannot read {path} as CSV: {exc}") from None
        row = 1  # the header
        while True:
            row += 1
            try:
                raw = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a value over csv's limit: the reader goes on after it
                text = str(exc)
                if "field limit" in text:
                    text = (f"a value is over {_size(csv.field_size_limit())} long; a value "
                            f"holds at most {_size(MAX_FIELD_CHARS)}")
                yield row, {}, text, None
                continue
            except OSError as exc:
                raise InputError(f"cannot read {path} as CSV: {exc}") from None
            attrs = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
            bad = _bad_value(attrs)
            if bad is not None:
                yield row, _safe_attrs(attrs), bad, None
                continue
            text = _text(attrs.get("bbox")) or ""
            parts = [p for p in re.split(r"[,;\s]+", text.strip("[]() ")) if p]
            try:
                bbox = tuple(float(p) for p in parts)
            except ValueError:
                bbox = ()
            if len(bbox) != 4:
                bbox = f"bbox must be XMIN,YMIN,XMAX,YMAX, got {text!r}"
            yield row, attrs, bbox, _text(attrs.get("crs"))


def read_items(path: str | Path) -> tuple[list[BatchItem], list[ItemProblem]]:
    """The file's good items and one problem per bad row. Raises InputError only when the
    file as a whole is unusable (missing, unreadable, no rows)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"no items file at {path}")
    rows = _rows_from_csv(path) if path.suffix.lower() == ".csv" else _rows_from_vector(path)
    items: list[BatchItem] = []
    problems: list[ItemProblem] = []
    rows_of: dict[str, int] = {}
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
        rows_of.setdefault(item.id, row)
    if not items and not problems:
        raise InputError(f"{path} has no items")
    items, problems = _without_duplicates(items, problems)
    return _without_collisions(items, problems, rows_of)


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


def _without_collisions(items: list[BatchItem], problems: list[ItemProblem],
                        rows_of: dict[str, int]):
    """Items whose outputs would share a file name (``a`` with 2 variations and ``a_v1``; or
    ``A`` and ``a``, one file on Windows and macOS) are refused up front, with one line
    naming their rows: either one's output would be lost."""
    owners: dict[str, list[BatchItem]] = {}
    for item in items:
        for stem in output_stems(item):
            owners.setdefault(stem.casefold(), []).append(item)
    refused: set[str] = set()
    reported: set[frozenset[str]] = set()
    for stem, group in owners.items():
        ids = frozenset(i.id for i in group)
        if len(group) < 2 or ids in reported:
            continue
        reported.add(ids)
        refused.update(ids)
        names = sorted({s for i in group for s in output_stems(i) if s.casefold() == stem})
        who = " and ".join(
            f"row {rows_of[i.id]} ({i.id}"
            + (f", {i.variations} variations)" if i.variations > 1 else ")")
            for i in sorted(group, key=lambda i: rows_of[i.id]))
        if len(names) == 1:
            clash = f"would both write {names[0]}.tif"
        else:
            files = " and ".join(f"{n}.tif" for n in names)
            clash = f"would write {files}, one file on Windows and macOS"
        problems.append(ItemProblem(names[0], f"{who} {clash}: give one of them another id"))
    return [i for i in items if i.id not in refused], problems
