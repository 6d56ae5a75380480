"""Odd CRSs and extents, checked against references that do not share the engine's code:
GDAL (through rasterio.warp.transform) for coordinates, pyproj.Geod for ground distances,
mercantile for Google's level pixels.

The cases are the ones an independent attack found (issue 13): geographic CRSs in grads,
the antimeridian inside a UTM zone, Web Mercator's latitude limit at the extent's edges,
pixels far from square across a wide latitude span, and rasters far coarser than a model
window.
"""

from __future__ import annotations

import math
import re

import mercantile
import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import SHARED_RASTERS
from pyproj import CRS, Geod, Transformer
from rasterio.warp import transform as gdal_transform

from engine.errors import InputError
from engine.geo.grid import LevelRequest, build_grid
from engine.geo.raster_source import ground_pixel_size, latitude_at

WGS84 = Geod(ellps="WGS84")
SPHERE = Geod(a=6378137.0, b=6378137.0)
WEB_MERCATOR_MAX_LAT = 85.0511287798066
NTF_PARIS_GRADS = "EPSG:4807"  # NTF (Paris): latitude and longitude in grads, Paris meridian
LAMBERT_II = "EPSG:27572"  # NTF (Paris) / Lambert zone II: its geodetic CRS is in grads


def google_pixel_m(level: int, lat: float, lon: float = 0.0) -> float:
    """Ground metres of one level-L Google pixel at ``lat``, measured on a mercantile tile."""
    b = mercantile.bounds(mercantile.tile(lon, lat, level))
    dlon = (b.east - b.west) / 256.0
    return SPHERE.inv(lon - dlon / 2, lat, lon + dlon / 2, lat)[2]


def gdal_lonlat(crs: CRS, xs, ys) -> tuple[list[float], list[float]]:
    """GDAL's longitude, latitude (degrees, Greenwich, WGS 84) of points in ``crs``."""
    return gdal_transform(rasterio.crs.CRS.from_wkt(crs.to_wkt()), "EPSG:4326",
                          list(xs), list(ys))


def gdal_pixel_m(crs: CRS, transform: Affine, col: float, row: float) -> tuple[float, float]:
    """(x, y) ground metres of the pixel at (col, row): GDAL for coordinates, Geod for metres."""
    pts = [transform * (col, row), transform * (col + 1, row), transform * (col, row + 1)]
    lon, lat = gdal_lonlat(crs, [p[0] for p in pts], [p[1] for p in pts])
    return (WGS84.inv(lon[0], lat[0], lon[1], lat[1])[2],
            WGS84.inv(lon[0], lat[0], lon[2], lat[2])[2])


# --------------------------------------------------------------------------------------------
# Geographic CRSs in grads


def grads_bbox(lon_deg_paris: float, lat_deg: float, half_deg: float = 0.004):
    g = 400.0 / 360.0
    return ((lon_deg_paris - half_deg) * g, (lat_deg - half_deg) * g,
            (lon_deg_paris + half_deg) * g, (lat_deg + half_deg) * g)


def test_grads_crs_reads_as_grads_in_gdal():
    # The premise, from GDAL: 54.2778 grad north is 48.85 degrees, 0 grad is Paris (2.3372 E)
    lon, lat = gdal_lonlat(CRS.from_user_input(NTF_PARIS_GRADS), [0.0], [54.2778])
    assert lat[0] == pytest.approx(48.85, abs=0.01)
    assert lon[0] == pytest.approx(2.337, abs=0.01)


def test_grads_geographic_grid_is_square_and_level_sized():
    crs = CRS.from_user_input(NTF_PARIS_GRADS)
    grid = build_grid(grads_bbox(0.0, 48.85), crs, LevelRequest(level=16))
    mx, my = gdal_pixel_m(grid.crs, grid.transform, grid.width // 2, grid.height // 2)
    want = google_pixel_m(16, 48.85)  # 1.572 m
    assert mx == pytest.approx(want, rel=0.01)
    assert my == pytest.approx(want, rel=0.01)
    assert grid.ground_resolution == pytest.approx(want, rel=1e-3)
    lon, lat = gdal_lonlat(crs, [0.0], [48.85 * 400 / 360])
    assert grid.centre_lonlat == pytest.approx((lon[0], lat[0]), abs=1e-3)


def test_projected_crs_on_a_grads_datum_is_square_and_level_sized():
    crs = CRS.from_user_input(LAMBERT_II)
    bbox = (600000.0, 2428000.0, 602000.0, 2429500.0)  # Paris
    grid = build_grid(bbox, crs, LevelRequest(level=16))
    lon, lat = gdal_lonlat(crs, [601000.0], [2428750.0])
    want = google_pixel_m(16, lat[0])
    mx, my = gdal_pixel_m(grid.crs, grid.transform, grid.width // 2, grid.height // 2)
    assert mx == pytest.approx(want, rel=0.01)
    assert my == pytest.approx(want, rel=0.01)
    assert grid.centre_lonlat == pytest.approx((lon[0], lat[0]), abs=1e-3)


def test_utm_zone_of_a_grads_extent_is_found_from_greenwich_degrees():
    # 5 grad east of Paris is 4.5 + 2.337 = 6.84 degrees east of Greenwich: zone 32, not 31
    grid = build_grid(grads_bbox(4.5, 45.0, 0.01), NTF_PARIS_GRADS, LevelRequest(level=14),
                      out_crs="utm")
    assert grid.crs.to_epsg() == 32632


def test_grads_raster_pixel_size_and_latitude():
    crs = CRS.from_user_input(NTF_PARIS_GRADS)
    g = 400.0 / 360.0
    transform = Affine(1e-4 * g, 0.0, 0.0, 0.0, -1e-4 * g, 48.9 * g)  # 1e-4 degree pixels
    mx, my = gdal_pixel_m(crs, transform, 10, 10)
    gx, gy = ground_pixel_size(crs, transform, 10, 10)
    assert gx == pytest.approx(mx, rel=1e-3)
    assert gy == pytest.approx(my, rel=1e-3)
    lat = gdal_lonlat(crs, [0.0], [(48.9 - 10e-4) * g])[1][0]
    assert latitude_at(crs, transform, 10, 10) == pytest.approx(lat, abs=1e-4)


def test_grads_extent_past_the_latitude_limit_is_refused():
    # 95 grad is 85.5 degrees, beyond Web Mercator's limit though below 100 grad
    with pytest.raises(InputError, match="limit"):
        build_grid((0.0, 94.9, 0.1, 95.0), NTF_PARIS_GRADS, LevelRequest(level=12))


# --------------------------------------------------------------------------------------------
# Antimeridian: the area-of-use check wraps longitudes


def test_utm_60n_extent_across_the_antimeridian_is_accepted():
    crs = CRS.from_epsg(32660)
    bbox = (740000.0, 4400000.0, 800000.0, 4460000.0)
    lon, _ = gdal_lonlat(crs, [bbox[0], bbox[2]], [bbox[1], bbox[3]])
    assert lon[0] > 0 > lon[1]  # the premise: the extent straddles 180 degrees
    grid = build_grid(bbox, crs, LevelRequest(level=12))
    assert grid.bounds == pytest.approx(bbox)
    mx, my = gdal_pixel_m(crs, grid.transform, grid.width // 2, grid.height // 2)
    assert mx == pytest.approx(my, rel=0.01)


@pytest.mark.parametrize("epsg,x,y", [(3994, 0.0, -4000000.0), (32660, 5000000.0, 500000.0)])
def test_area_of_use_message_gives_longitudes_in_range(epsg, x, y):
    with pytest.raises(InputError, match="swapped") as exc:
        build_grid((x, y, x + 10000.0, y + 10000.0), f"EPSG:{epsg}", LevelRequest(level=12))
    lon = float(str(exc.value).split("lon ")[1].split(",")[0])
    ref, _ = gdal_lonlat(CRS.from_epsg(epsg), [x + 5000.0], [y + 5000.0])
    assert -180.0 <= lon <= 180.0
    assert lon == pytest.approx(ref[0], abs=0.01)


def test_mercator_41_extent_east_of_the_antimeridian_is_accepted():
    crs = CRS.from_epsg(3994)  # used from 155 E to 170 W, across 180 degrees
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(-175.0, -40.0)
    grid = build_grid((x, y, x + 5000.0, y + 5000.0), crs, LevelRequest(level=12))
    assert grid.centre_lonlat[0] == pytest.approx(-175.0, abs=0.1)


# --------------------------------------------------------------------------------------------
# Web Mercator's latitude limit, at every edge


@pytest.mark.parametrize(
    "crs,bbox",
    [
        ("EPSG:3857", (0.0, 20000000.0, 20000.0, 20040000.0)),  # top past 20037508 m
        ("EPSG:3857", (0.0, -20040000.0, 20000.0, -20000000.0)),  # bottom past -85.05
        ("EPSG:4326", (0.0, 84.95, 0.05, 85.12)),
        ("EPSG:4326", (0.0, -85.12, 0.05, -84.95)),
        ("EPSG:3413", (0.0, -1000000.0, 200000.0, -500000.0)),  # polar: one corner past
    ],
)
def test_extent_reaching_past_the_latitude_limit_is_refused(crs, bbox):
    c = CRS.from_user_input(crs)
    xs = [bbox[0], bbox[2], bbox[0], bbox[2], (bbox[0] + bbox[2]) / 2]
    ys = [bbox[1], bbox[1], bbox[3], bbox[3], (bbox[1] + bbox[3]) / 2]
    _, lat = gdal_lonlat(c, xs, ys)
    # the premise: the centre is inside the limit, an edge is not
    assert abs(lat[-1]) < WEB_MERCATOR_MAX_LAT < max(map(abs, lat))
    with pytest.raises(InputError, match="limit") as exc:
        build_grid(bbox, crs, LevelRequest(level=12))
    assert "\n" not in str(exc.value)


def test_extent_just_inside_the_latitude_limit_is_accepted():
    build_grid((0.0, 84.9, 0.05, 85.05), "EPSG:4326", LevelRequest(level=12))
    y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(0.0, 85.05)[1]
    build_grid((0.0, y - 20000.0, 20000.0, y), "EPSG:3857", LevelRequest(level=12))


# --------------------------------------------------------------------------------------------
# Wide latitude spans: pixels far from square at the edges are reported


def edge_aspects(grid) -> list[float]:
    """x / y ground size of a pixel at the middle of the top and bottom rows (GDAL + Geod)."""
    out = []
    for row in (0, grid.height - 1):
        mx, my = gdal_pixel_m(grid.crs, grid.transform, grid.width // 2, row)
        out.append(mx / my)
    return out


def test_wide_latitude_span_in_degrees_warns_and_suggests_utm():
    grid = build_grid((0.0, 80.0, 1.0, 85.0), "EPSG:4326", LevelRequest(level=10))
    aspects = edge_aspects(grid)
    assert max(aspects) > 1.25 and min(aspects) < 0.75  # the premise, from GDAL and Geod
    warning = " ".join(grid.notes)
    assert "square" in warning and "--out-crs utm" in warning
    said = [float(n) for n in re.findall(r"(\d+\.\d+):1", warning)]
    assert max(said) == pytest.approx(max(aspects), abs=0.01)
    assert min(said) == pytest.approx(min(aspects), abs=0.01)


@pytest.mark.parametrize(
    "crs,bbox,level",
    [
        ("EPSG:4326", (7.0, 45.0, 7.012, 45.01), 16),
        ("EPSG:32632", (400000.0, 5400000.0, 460000.0, 5460000.0), 12),  # conformal
        ("EPSG:3857", (0.0, 8000000.0, 400000.0, 8400000.0), 10),  # conformal
    ],
)
def test_square_pixels_bring_no_warning(crs, bbox, level):
    grid = build_grid(bbox, crs, LevelRequest(level=level))
    for aspect in edge_aspects(grid):
        assert aspect == pytest.approx(1.0, abs=0.01)
    assert grid.notes == ()


def test_cli_prints_the_grid_notes(tmp_path, capsys):
    from engine.cli import main

    # a model folder that does not exist is refused right after the plan is printed: nothing
    # heavy runs
    assert main(["generate", "--bbox", "0,80,1,85", "--crs", "EPSG:4326", "--level", "10",
                 "--prompt", "ice", "--out", str(tmp_path / "x.tif"), "--device", "cpu",
                 "--precision", "fp32", "--model", str(tmp_path / "no-model"),
                 "--offline"]) != 0
    assert not (tmp_path / "x.tif").exists()
    err = " ".join(capsys.readouterr().err.split())  # the CLI wraps long lines
    assert "note: pixels are square" in err and "--out-crs utm" in err


# --------------------------------------------------------------------------------------------
# Rasters far coarser than a model window


WORLD = SHARED_RASTERS / "world.rgb.tif"


def plan_error(planner, request) -> str:
    from engine.jobs.edit import open_source

    with pytest.raises(InputError) as exc, open_source(request.raster) as src:
        planner(request, src)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_coarse_raster_edit_is_refused_for_its_real_reason(tmp_path):
    from engine.jobs.edit import EditRequest, plan_edit

    with rasterio.open(WORLD) as ds:  # the premise: no nodata, no alpha, no mask band
        assert ds.nodata is None and ds.dataset_mask().all()
    poly = {"type": "Polygon", "coordinates": [[[0, 40], [10, 40], [10, 50], [0, 50], [0, 40]]]}
    message = plan_error(plan_edit, EditRequest(raster=WORLD, prompt="x", out=tmp_path / "o.tif",
                                                mask=poly))
    assert "nodata" not in message
    assert "coarse" in message and "km" in message


@pytest.mark.parametrize("side,reason", [("east", "coarse"), ("south", "pole"),
                                         ("north", "pole")])
def test_coarse_raster_extend_is_refused_for_its_real_reason(tmp_path, side, reason):
    from engine.jobs.edit import ExtendRequest, plan_extend

    # world.rgb.tif spans -90..90: north and south run into a pole before anything else
    message = plan_error(plan_extend, ExtendRequest(raster=WORLD, prompt="x", by="100km",
                                                    side=side, out=tmp_path / "o.tif"))
    assert reason in message


def write_polar_raster(path, top: float) -> None:
    """A fine 4326 raster whose top edge is at ``top`` degrees north."""
    profile = dict(driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                   crs="EPSG:4326", transform=Affine(2e-4, 0.0, 10.0, 0.0, -2e-4, top))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.full((3, 64, 64), 120, np.uint8))


def test_extend_north_past_the_pole_is_refused(tmp_path):
    from engine.jobs.edit import ExtendRequest, plan_extend

    raster = tmp_path / "polar.tif"
    write_polar_raster(raster, 84.0)
    # 40000 px of 2e-4 degrees: 8 degrees north of 84, past 90
    message = plan_error(plan_extend, ExtendRequest(raster=raster, prompt="x", by="40000px",
                                                    side="north", out=tmp_path / "o.tif",
                                                    tile=64, overlap=16))
    assert "90" in message and "north" in message


@pytest.mark.parametrize("crs,top,pixel", [
    ("EPSG:4326", 84.9, 2e-4),  # 1000 px of 2e-4 degrees: to 85.1 N, past 85.0511
    ("EPSG:3857", 20037000.0, 1.0),  # 1000 px of 1 m: to y = 20038000, past 20037508.34
])
def test_extend_past_web_mercators_latitude_limit_is_refused(tmp_path, crs, top, pixel):
    """Generate refuses extents past 85.0511 N (no zoom levels there); extend must too."""
    from engine.jobs.edit import ExtendRequest, open_source, plan_extend

    raster = tmp_path / "north.tif"
    profile = dict(driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs=crs,
                   transform=Affine(pixel, 0.0, 10.0 if crs == "EPSG:4326" else 1e6, 0.0,
                                    -pixel, top))
    with rasterio.open(raster, "w", **profile) as ds:
        ds.write(np.full((3, 64, 64), 120, np.uint8))
    request = ExtendRequest(raster=raster, prompt="x", by="1000px", side="north",
                            out=tmp_path / "o.tif", tile=64, overlap=16)
    message = plan_error(plan_extend, request)
    assert "Web Mercator" in message and "north" in message
    with open_source(raster) as src:  # short of the limit it plans
        plan_extend(ExtendRequest(raster=raster, prompt="x", by="10px", side="north",
                                  out=tmp_path / "o.tif", tile=64, overlap=16), src)


def test_extend_north_short_of_the_pole_is_planned(tmp_path):
    from engine.jobs.edit import ExtendRequest, open_source, plan_extend

    raster = tmp_path / "polar.tif"
    write_polar_raster(raster, 84.0)
    with open_source(raster) as src:
        plan = plan_extend(ExtendRequest(raster=raster, prompt="x", by="100px", side="north",
                                         out=tmp_path / "o.tif", tile=64, overlap=16), src)
    assert plan.windows > 0
    assert math.isclose(plan.transform.f, 84.0 + 100 * 2e-4, abs_tol=1e-9)


def test_ungeoreferenced_raster_is_one_error_line_without_rasterio_warning(tmp_path):
    """A raster with no grid is refused by describe_source; rasterio's NotGeoreferencedWarning
    must not print a second line before it (`text2earth score/label/restyle` showed both)."""
    import warnings

    from engine.geo.raster_source import describe_source, open_source

    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3,
                       dtype="uint8") as dst:  # GDAL writes no geotransform, no CRS
        dst.write(np.zeros((3, 8, 8), np.uint8))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match="not georeferenced"), open_source(path) as src:
            describe_source(src)
    assert [str(w.message) for w in seen] == []


@pytest.mark.parametrize("bbox,words", [
    # issue 22 item 9: each says what is wrong, never "empty" for all of them
    ((float("nan"), 0.0, 1.0, 1.0), "xmin is not a number (NaN)"),
    ((0.0, float("nan"), 1.0, 1.0), "ymin is not a number (NaN)"),
    ((0.0, 0.0, float("inf"), 1.0), "xmax is infinite (inf)"),
    ((0.0, 0.0, 1.0, -float("inf")), "ymax is infinite (-inf)"),
    ((2.0, 0.0, 1.0, 1.0), "inverted: xmin 2 is greater than xmax 1"),
    ((0.0, 3.0, 1.0, 1.0), "inverted: ymin 3 is greater than ymax 1"),
    ((1.0, 0.0, 1.0, 1.0), "zero area: its width is 0"),
    ((0.0, 1.0, 1.0, 1.0), "zero area: its height is 0"),
    ((0.0, 0.0, 1.0), "four numbers"),
    (("a", 0, 1, 1), "four numbers"),
])
def test_extent_numbers_say_what_is_wrong(bbox, words):
    """The check every way in shares (the batch's rows too): no CRS needed."""
    from engine.geo.grid import check_extent_numbers

    with pytest.raises(InputError) as info:
        check_extent_numbers(bbox)
    assert words in str(info.value) and "empty" not in str(info.value)


def test_extent_numbers_pass_a_good_extent_through():
    from engine.geo.grid import check_extent_numbers

    assert check_extent_numbers(["447000", 5411000, 447300.5, 5411300]) == (
        447000.0, 5411000.0, 447300.5, 5411300.0)


@pytest.mark.parametrize("bbox,words", [
    ((8.3, 48.8, 8.2, 48.9), "xmin 8.3 is east of xmax 8.2"),  # swapped, not the antimeridian
    ((170.0, 0.0, -170.0, 1.0), "antimeridian"),  # 20 degrees across 180: the antimeridian
    ((447000.0, 5411000.0, 447300.0, 5411300.0), "projected coordinates"),
])
def test_lon_lat_extents_say_swapped_antimeridian_or_projected(bbox, words):
    with pytest.raises(InputError, match=re.escape(words)):
        build_grid(bbox, "EPSG:4326")
