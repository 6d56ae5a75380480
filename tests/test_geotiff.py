"""GeoTIFF writing, read back with rasterio (and PIL for the raw XMP tag)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from PIL import Image
from pyproj import CRS
from rasterio.enums import ColorInterp

from engine.errors import InputError
from engine.geo import geotiff
from engine.geo.geotiff import synthetic_tags, write_geotiff

UTM = CRS.from_epsg(32632)


def image(h=300, w=400, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_round_trip_pixels_grid_and_layout(tmp_path):
    rgb = image()
    transform = Affine(0.5, 0, 447000.0, 0, -0.5, 5411300.0)
    path = write_geotiff(tmp_path / "a.tif", rgb, UTM, transform, synthetic_tags({"seed": 3}))
    with rasterio.open(path) as ds:
        assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == (400, 300, 3, "uint8")
        assert ds.transform == transform
        assert ds.bounds == (447000.0, 5411300.0 - 150, 447200.0, 5411300.0)
        assert CRS.from_wkt(ds.crs.to_wkt()).equals(UTM)
        assert ds.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert ds.compression.name.lower() == "deflate"
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
        assert ds.overviews(1) == [2]  # 400 px: overviews down to one 256 px tile
        np.testing.assert_array_equal(np.moveaxis(ds.read(), 0, 2), rgb)
        tags = ds.tags()
    assert tags["TEXT2EARTH_SEED"] == "3"
    assert tags["TEXT2EARTH_SYNTHETIC"] == "yes"
    assert "SYNTHETIC" in tags["TIFFTAG_IMAGEDESCRIPTION"]


def test_xmp_digital_source_type_is_in_the_tiff(tmp_path):
    path = write_geotiff(tmp_path / "x.tif", image(64, 64), UTM, Affine(1, 0, 100, 0, -1, 200), {})
    with Image.open(path) as im:
        xmp = im.tag_v2.get(700)  # TIFF tag 700 = XMP packet, read without GDAL
    xmp = xmp.decode() if isinstance(xmp, bytes) else xmp
    assert xmp.startswith("<?xpacket begin=")
    assert "digitalsourcetype/trainedAlgorithmicMedia" in xmp
    import xml.dom.minidom

    xml.dom.minidom.parseString(xmp.encode())  # well-formed XML


@pytest.mark.parametrize(
    "crs",
    [
        "+proj=tmerc +lat_0=0 +lon_0=10.5 +k=0.9996 +x_0=500000 +y_0=0 +ellps=GRS80 +units=m",
        "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +units=us-ft",
        "EPSG:2263",
        "EPSG:4326",
    ],
)
def test_custom_and_odd_crs_survive(tmp_path, crs):
    crs = CRS.from_user_input(crs)
    path = write_geotiff(tmp_path / "c.tif", image(32, 32), crs, Affine(1, 0, 10, 0, -1, 20), {})
    with rasterio.open(path) as ds:
        back = CRS.from_wkt(ds.crs.to_wkt())
    assert back.equals(crs, ignore_axis_order=True)


def test_existing_file_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "keep.tif"
    target.write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists"):
        write_geotiff(target, image(16, 16), UTM, Affine(1, 0, 100, 0, -1, 200), {})
    assert target.read_bytes() == b"precious"
    write_geotiff(target, image(16, 16), UTM, Affine(1, 0, 100, 0, -1, 200), {}, overwrite=True)
    with rasterio.open(target) as ds:
        assert ds.width == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tif"]


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(rasterio.shutil, "copy", boom)  # after the pixels, before the COG
    with pytest.raises(RuntimeError, match="boom"):
        write_geotiff(tmp_path / "never.tif", image(), UTM, Affine(1, 0, 100, 0, -1, 200), {})
    assert list(tmp_path.iterdir()) == []


def test_bad_output_names(tmp_path):
    with pytest.raises(InputError, match=".tif"):
        geotiff.check_output_path(tmp_path / "scene.png")
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(InputError, match="folder"):
        geotiff.check_output_path(tmp_path / "dir.tif")


def test_confined_write_refuses_a_folder_swapped_for_a_symlink(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    target = allowed / "sub" / "scene.tif"
    write_geotiff(target, image(16, 16), UTM, Affine(1, 0, 100, 0, -1, 200), {},
                  allowed_dirs=[allowed])
    assert target.exists()
    (allowed / "sub").rename(tmp_path / "moved")
    (allowed / "sub").symlink_to(outside)  # swapped after the request was validated
    with pytest.raises(InputError, match="outside"):
        write_geotiff(allowed / "sub" / "again.tif", image(16, 16), UTM,
                      Affine(1, 0, 100, 0, -1, 200), {}, allowed_dirs=[allowed])
    assert list(outside.iterdir()) == []
