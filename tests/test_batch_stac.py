"""The batch's STAC files as other tools read them: odc-stac loads the three uint8 bands equal to
the COG (rasterio), ``gsd`` is metres on the ground (pyproj's Geod, known numbers), the
collection passes stac-check 1.14's best practices, no local path is recorded, and a full disk
(a 64 KiB tmpfs) while a catalog file or the report is written leaves nothing behind.

The COGs are written by the engine's own writer (engine.geo.geotiff) with the tags a batch
output carries: no model runs here."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import tmpfs
from pyproj import CRS, Geod, Transformer
from rasterio.transform import from_origin

from engine.batch.stac import write_collection
from engine.errors import DiskFullError
from engine.geo.geotiff import synthetic_tags, write_geotiff

LAT = 48.8  # where the grids below lie


def write_output(path: Path, crs: str, transform, size: int = 64, model: str = "lcybuaa/x",
                 seed: int = 1) -> Path:
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)
    tags = synthetic_tags({"prompt": "farmland", "level": 17, "seed": seed, "model_id": model,
                           "model_sha256": "ab" * 32, "precision": "fp32", "steps": 2,
                           "ground_resolution_m": 1})
    tags["TEXT2EARTH_BATCH_ITEM"] = path.stem
    return write_geotiff(path, rgb, CRS.from_user_input(crs), transform, tags)


def mercator(lat: float = LAT, pixel: float = 1.194328566955879) -> tuple[str, object]:
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(10.3, lat)
    return "EPSG:3857", from_origin(x, y, pixel, pixel)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    out = tmp_path_factory.mktemp("stac")
    demo = tmp_path_factory.mktemp("cache") / "text2earth" / "demo-checkpoint-v1"
    demo.mkdir(parents=True)
    outputs = [
        write_output(out / "utm.tif", "EPSG:32632", from_origin(447000, 5411060, 1.0, 1.0)),
        write_output(out / "merc.tif", *mercator(), seed=2, model=str(demo)),
        write_output(out / "geo.tif", "EPSG:4326", from_origin(10.3, LAT, 1e-5, 1e-5), seed=3),
    ]
    write_collection(out, outputs, [])
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_odc_stac_loads_the_three_uint8_bands_equal_to_the_cog(catalog):
    import pystac
    from odc.stac import load

    collection = pystac.read_file(str(catalog / "collection.json"))
    items = {i.id: i for i in collection.get_items()}
    for name in ("utm", "merc"):
        data = load([items[name]], chunks=None)
        assert sorted(data.data_vars) == ["blue", "green", "red"]
        with rasterio.open(catalog / f"{name}.tif") as src:
            want = src.read()
        for index, band in enumerate(("red", "green", "blue")):
            got = data[band].isel(time=0).values
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, want[index])


def ground_metres(crs: str, transform, col: float, row: float, dcol: int, drow: int) -> float:
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    (lon1, lon2), (lat1, lat2) = to_wgs84.transform(
        *zip(transform * (col, row), transform * (col + dcol, row + drow), strict=True))
    return Geod(ellps="WGS84").inv(lon1, lat1, lon2, lat2)[2]


def test_gsd_is_metres_on_the_ground(catalog):
    gsd = {name: read_json(catalog / name / f"{name}.json")["properties"]["gsd"]
           for name in ("utm", "merc", "geo")}
    # UTM: a metre of grid is 0.9996..1.0004 m of ground near the central meridian
    assert gsd["utm"] == pytest.approx(1.0, abs=1e-3)
    # Web Mercator at 48.8 N: 1.194 units per pixel are about 0.786 m on the ground
    assert gsd["merc"] == pytest.approx(1.194328566955879 * math.cos(math.radians(LAT)),
                                        rel=5e-3)
    # on the ellipsoid a Web Mercator pixel is not quite square: gsd lies between its sides
    sides = sorted(ground_metres(*mercator(), 32, 32, *step) for step in ((1, 0), (0, 1)))
    assert sides[0] <= gsd["merc"] <= sides[1] and sides[1] / sides[0] < 1.01
    # 1e-5 degrees: 1.11 m north-south, 0.73 m east-west; gsd lies between
    across = ground_metres("EPSG:4326", from_origin(10.3, LAT, 1e-5, 1e-5), 32, 32, 1, 0)
    down = ground_metres("EPSG:4326", from_origin(10.3, LAT, 1e-5, 1e-5), 32, 32, 0, 1)
    assert 0.73 < across < gsd["geo"] < down < 1.12
    summary = read_json(catalog / "collection.json")["summaries"]["gsd"]
    assert summary == {"minimum": min(gsd.values()), "maximum": max(gsd.values())}


def test_stac_check_best_practices(catalog):
    """stac-check 1.14's rules: summaries, a self link in the collection, a title on every
    other link; STAC 1.1: license 'other' comes with a license link."""
    collection = read_json(catalog / "collection.json")
    assert collection["summaries"]["bands"][0]["name"] == "red"
    links = collection["links"]
    assert [link["href"] for link in links if link["rel"] == "self"] == ["./collection.json"]
    assert all(link.get("title") for link in links if link["rel"] != "self")
    assert collection["license"] == "other"
    assert [link["href"].startswith("https://") for link in links
            if link["rel"] == "license"] == [True]
    for name in ("utm", "merc", "geo"):
        item = read_json(catalog / name / f"{name}.json")
        assert all(link.get("title") for link in item["links"])
        assert len(item["properties"]) <= 20  # stac-check: "bloated metadata" above 20


def test_a_moved_folder_still_reads(catalog, tmp_path):
    import shutil

    import pystac

    moved = tmp_path / "moved"
    shutil.copytree(catalog, moved)
    collection = pystac.read_file(str(moved / "collection.json"))
    hrefs = [i.assets["image"].get_absolute_href() for i in collection.get_items()]
    assert sorted(hrefs) == sorted(str(moved / f"{n}.tif") for n in ("geo", "merc", "utm"))


def test_a_relative_out_dir_gives_hrefs_that_resolve(tmp_path, monkeypatch):
    """`text2earth batch ... --out-dir out` as the docs write it: every asset href, read as
    STAC readers read it (relative to the item's own file), names the COG."""
    import pystac

    monkeypatch.chdir(tmp_path)
    out = Path("out")
    out.mkdir()
    outputs = [write_output(out / "utm.tif", "EPSG:32632",
                            from_origin(447000, 5411060, 1.0, 1.0))]
    write_collection(out, outputs, [])
    collection = pystac.read_file(str(tmp_path / "out" / "collection.json"))
    [item] = collection.get_items()
    assert item.assets["image"].get_absolute_href() == str(tmp_path / "out" / "utm.tif")
    assert item.assets["image"].href == "../utm.tif"


def test_no_local_path_is_recorded(catalog):
    texts = [p.read_text() for p in catalog.rglob("*.json")]
    merc = read_json(catalog / "merc" / "merc.json")["properties"]
    assert merc["text2earth:model"] == "demo-checkpoint-v1"
    assert merc["text2earth:model_sha256"] == "ab" * 32
    assert read_json(catalog / "utm" / "utm.json")["properties"]["text2earth:model"] == \
        "lcybuaa/x"
    assert not [t for t in texts if str(catalog.parent.parent) in t]


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs, filled up (mounting needs root: skipped elsewhere)."""
    with tmpfs(tmp_path / "tiny", "size=64k") as mount:
        try:
            with open(mount / "filler", "wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        except OSError:
            pass
        yield mount


def test_a_full_disk_while_the_catalog_is_written_leaves_nothing(full_disk, tmp_path):
    cog = write_output(tmp_path / "utm.tif", "EPSG:32632", from_origin(447000, 5411060, 1, 1))
    with pytest.raises(DiskFullError) as info:
        write_collection(full_disk, [cog], [])
    assert info.value.exit_code == 5 and info.value.kind == "disk_full"
    assert "full" in str(info.value) and "\n" not in str(info.value)
    left = sorted(p.relative_to(full_disk).as_posix() for p in full_disk.rglob("*"))
    assert not [p for p in left if p.split("/")[-1].startswith(".t2e-") or
                p.endswith(".json")], left


def test_a_full_disk_while_the_report_is_written_exits_5_leaving_nothing(full_disk, tmp_path,
                                                                        capsys):
    from engine.cli import main

    items = tmp_path / "items.csv"  # one bad row: no model is needed to reach the writes
    items.write_text("id,prompt,bbox,crs\nnope,,\"447000,5411000,447060,5411060\",EPSG:32632\n")
    code = main(["batch", str(items), "--out-dir", str(full_disk), "--model", str(tmp_path),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 5, err
    assert "full" in err and "internal error" not in err
    assert sorted(os.listdir(full_disk)) == ["filler"]


def test_the_report_writer_leaves_nothing_on_a_full_disk(full_disk):
    from engine.batch.run import BatchReport, _write_report

    with pytest.raises(DiskFullError):
        _write_report(full_disk, BatchReport())
    assert sorted(os.listdir(full_disk)) == ["filler"]


def test_a_disk_filling_during_the_catalog_never_leaves_a_collection_linking_missing_items(
        tmp_path, monkeypatch):
    """The last of the catalog's writes fails (the disk filled meanwhile): whatever is left,
    collection.json never links an item file that is not there."""
    import engine.batch.stac as stac

    outputs = [write_output(tmp_path / f"{n}.tif", "EPSG:32632",
                            from_origin(447000 + 100 * i, 5411060, 1, 1), seed=i)
               for i, n in enumerate(("a", "b", "c"))]
    real = stac.write_json_text
    calls = []

    def filling(path, text):
        calls.append(Path(path).name)
        if len(calls) == 4:  # 3 items and the collection: the last write meets a full disk
            raise DiskFullError(f"the disk holding {Path(path).parent} is full")
        return real(path, text)

    monkeypatch.setattr(stac, "write_json_text", filling)
    with pytest.raises(DiskFullError):
        write_collection(tmp_path, outputs, [])
    collection = tmp_path / "collection.json"
    if collection.exists():
        links = [link["href"] for link in read_json(collection)["links"] if link["rel"] == "item"]
        assert all((tmp_path / href).is_file() for href in links), links
