"""Issue 22, the batch driver: nothing lost, bad rows one line each.

1. an output that does not read back whole (truncated) is redone, never skipped as done;
2. two rows whose outputs would share a name are refused up front, one line naming both;
8. a non-UTF-8 row or a huge field is one bad row (CSV and GeoJSON), the others go on;
20. a batch on the demo checkpoint is marked as a pipeline check, as generate marks it.
"""

from __future__ import annotations

import json

import pytest
import rasterio
from rasterio.errors import RasterioError

from engine.batch.items import read_items
from engine.batch.run import BatchOptions, run_batch
from engine.batch.tasks import FINGERPRINT_TAG, Settings
from engine.batch.workers import InProcess, ModelSpec
from engine.cli import main

UTM = "EPSG:32632"
HEADER = b"id,prompt,bbox,crs,level,seed,variations\n"
BOX = b'"447000,5411000,447060,5411060"'


def csv_row(item_id: bytes, prompt: bytes, variations: int = 1) -> bytes:
    return b",".join([item_id, prompt, BOX, UTM.encode(), b"17", b"1", b"%d" % variations]) + b"\n"


def read_every_block(path) -> None:
    """rasterio reads every block of every band and overview: raises if any is missing."""
    with rasterio.open(path) as src:
        levels = len(src.overviews(1))
    for level in [None, *range(levels)]:
        extra = {} if level is None else {"overview_level": level}
        with rasterio.open(path, **extra) as src:
            for _, window in src.block_windows(1):
                src.read(window=window)


@pytest.fixture(scope="module")
def settings(tiny_t2i):
    return Settings(model=str(tiny_t2i), precision="fp32", steps=1, tile=256, overlap=64)


# 1 -------------------------------------------------------------------------------------------

def test_a_truncated_output_is_redone_not_skipped(tmp_path, settings, t2i_model):
    items = tmp_path / "items.csv"
    items.write_bytes(HEADER + csv_row(b"a", b"farmland") + csv_row(b"b", b"forest"))
    options = BatchOptions(items, tmp_path / "out", settings, ModelSpec(settings.model),
                           quiet=True)
    assert run_batch(options, InProcess(options.spec, t2i_model)).count("done") == 2
    b = tmp_path / "out" / "b.tif"
    size = b.stat().st_size
    with open(b, "r+b") as fh:  # truncate -s: the header (and its fingerprint) survives
        fh.truncate(size // 2)
    with rasterio.open(b) as src:
        assert src.tags()[FINGERPRINT_TAG]
    with pytest.raises(RasterioError):
        read_every_block(b)
    report = run_batch(options, InProcess(options.spec, t2i_model))
    assert (report.count("done"), report.count("skipped")) == (1, 1)
    assert {r.key: r.status for r in report.results} == {"a": "skipped", "b": "done"}
    read_every_block(b)
    assert b.stat().st_size >= size * 0.9
    collection = json.loads((tmp_path / "out" / "collection.json").read_text())
    assert sorted(link["href"] for link in collection["links"] if link["rel"] == "item") == [
        "./a/a.json", "./b/b.json"]


# 2 -------------------------------------------------------------------------------------------

def test_outputs_that_would_share_a_name_are_refused_naming_both_rows(tmp_path):
    items = tmp_path / "items.csv"
    items.write_bytes(HEADER + csv_row(b"a", b"farmland", 2) + csv_row(b"ok", b"forest")
                      + csv_row(b"a_v1", b"lake") + csv_row(b"B", b"town")
                      + csv_row(b"b", b"city"))
    kept, problems = read_items(items)
    assert [i.id for i in kept] == ["ok"]
    lines = [p.message for p in problems]
    assert len(lines) == 2, lines
    first = next(m for m in lines if "a_v1.tif" in m)
    assert "row 2" in first and "row 4" in first and "\n" not in first
    second = next(m for m in lines if "b.tif" in m.lower())
    assert "row 5" in second and "row 6" in second and "Windows" in second


def test_every_collision_of_an_item_is_named(tmp_path):
    items = tmp_path / "items.csv"
    items.write_bytes(HEADER + csv_row(b"a", b"farmland", 3) + csv_row(b"a_v2", b"lake")
                      + csv_row(b"A_V3", b"town"))
    kept, problems = read_items(items)
    assert kept == []
    assert sorted(p.id for p in problems) == ["A_V3", "a_v2"]
    assert all("row 2 (a, 3 variations)" in p.message for p in problems)


def test_a_name_collision_writes_nothing_for_either_row(tmp_path, settings, t2i_model):
    items = tmp_path / "items.csv"
    items.write_bytes(HEADER + csv_row(b"a", b"farmland", 2) + csv_row(b"a_v1", b"lake"))
    options = BatchOptions(items, tmp_path / "out", settings, ModelSpec(settings.model),
                           quiet=True)
    report = run_batch(options, InProcess(options.spec, t2i_model))
    assert report.count("done") == 0 and report.count("failed") == 1
    assert not list((tmp_path / "out").glob("*.tif"))


# 8 -------------------------------------------------------------------------------------------

def test_a_non_utf8_csv_row_and_a_huge_field_are_one_bad_row_each(tmp_path):
    items = tmp_path / "items.csv"
    huge = b"x" * (10 << 20)
    items.write_bytes(HEADER + csv_row(b"ok", b"caf\xc3\xa9 fields") + csv_row(b"latin", b"caf\xe9")
                      + csv_row(b"big", huge) + csv_row(b"\xe9t\xe9", b"lake")
                      + csv_row(b"after", b"forest"))
    kept, problems = read_items(items)
    assert [(i.id, i.prompt) for i in kept] == [("ok", "café fields"), ("after", "forest")]
    assert len(problems) == 3
    latin, big, bad_id = (p.message for p in problems)
    assert latin.startswith("latin: ") and "UTF-8" in latin and "prompt" in latin
    assert big.startswith("row 4: a value is over")  # csv drops the row: its id is unknown
    assert "at most 64 KB" in big
    assert bad_id.startswith("row 5: ") and "UTF-8" in bad_id and "0xe9" in bad_id
    assert all(len(p.message) < 300 for p in problems)
    for p in problems:
        p.message.encode("utf-8")  # printable: no undecodable bytes carried along


def _feature(fid: str, prompt: str) -> dict:
    return {"type": "Feature", "properties": {"id": fid, "prompt": prompt},
            "geometry": {"type": "Polygon", "coordinates": [[
                [10.0, 48.0], [10.001, 48.0], [10.001, 48.001], [10.0, 48.001], [10.0, 48.0]]]}}


def test_a_non_utf8_geojson_feature_is_one_bad_row(tmp_path):
    body = json.dumps({"type": "FeatureCollection", "features": [
        _feature("ok", "caf\u00e9"), _feature("latin", "PLACEHOLDER"), _feature("next", "x")]})
    path = tmp_path / "items.geojson"
    path.write_bytes(body.encode().replace(b"PLACEHOLDER", b"caf\xe9"))
    kept, problems = read_items(path)
    assert [(i.id, i.prompt) for i in kept] == [("ok", "café"), ("next", "x")]
    assert len(problems) == 1 and problems[0].message.startswith("latin: ")
    assert "UTF-8" in problems[0].message


def test_a_geojson_feature_with_a_10_mb_field_is_one_bad_row(tmp_path):
    path = tmp_path / "items.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature("ok", "farmland"), _feature("big", "x" * (10 << 20)),
        _feature("next", "forest")]}))
    kept, problems = read_items(path)
    assert [i.id for i in kept] == ["ok", "next"]
    assert [i.crs for i in kept] == ["EPSG:4326", "EPSG:4326"]
    assert len(problems) == 1 and "MB" in problems[0].message
    assert problems[0].message.startswith("big: the prompt value is 10.0 MB long")


# 20 ------------------------------------------------------------------------------------------

def test_a_batch_on_the_demo_weights_is_a_pipeline_check(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    items = tmp_path / "items.csv"
    items.write_bytes(HEADER + csv_row(b"a", b"farmland", 2))
    out = tmp_path / "out"
    code = main(["batch", str(items), "--out-dir", str(out), "--model", "someone/not-here",
                 "--demo-fallback", "--steps", "1", "--precision", "fp32", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "not imagery" in err and "--model" in err
    names = sorted(p.name for p in out.glob("*.tif"))
    assert names == ["a_v1.pipeline-check.tif", "a_v2.pipeline-check.tif"]
    for name in names:
        with rasterio.open(out / name) as src:
            assert src.tags()["TEXT2EARTH_PIPELINE_CHECK"].startswith("yes")
