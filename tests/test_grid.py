"""Extent + CRS + level -> output grid, checked with pyproj and mercantile as references.

Pixel sizes are *measured*: the corners of a pixel near the grid's centre are converted to
lon/lat with a pyproj Transformer and the distances between them taken with pyproj.Geod.
The expected size of a level-L pixel comes from a mercantile tile measured the same way.
"""

from __future__ import annotations

import math

import mercantile
import pytest
from affine import Affine
from pyproj import CRS, Geod, Transformer

from engine.errors import InputError
from engine.geo.grid import LevelRequest, build_grid, is_web_mercator, parse_crs, utm_crs_for

SPHERE = Geod(a=6378137.0, b=6378137.0)
WGS84 = Geod(ellps="WGS84")
WEBMERC_PROJ = ("+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 +k=1 "
                "+units=m +nadgrids=@null +wktext +no_defs")


def google_pixel_m(level: int, lat: float, lon: float = 0.0) -> float:
    """Ground metres of one level-L Google pixel at ``lat``, measured on a mercantile tile."""
    tile = mercantile.tile(lon, lat, level)
    b = mercantile.bounds(tile)
    dlon = (b.east - b.west) / 256.0
    return SPHERE.inv(lon - dlon / 2, lat, lon + dlon / 2, lat)[2]


def mercantile_pixel_units(level: int) -> float:
    b = mercantile.xy_bounds(mercantile.tile(10.0, 20.0, level))
    return (b.right - b.left) / 256.0


def to_lonlat(crs) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)


def centre_lonlat(bbox, crs):
    return to_lonlat(crs).transform((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)


def measured_pixel_m(grid) -> tuple[float, float]:
    """(x, y) ground metres of the grid pixel at its centre, via Transformer + Geod."""
    tr = to_lonlat(grid.crs)
    c, r = grid.width // 2, grid.height // 2
    lon0, lat0 = tr.transform(*(grid.transform * (c, r)))
    lon1, lat1 = tr.transform(*(grid.transform * (c + 1, r)))
    lon2, lat2 = tr.transform(*(grid.transform * (c, r + 1)))
    return WGS84.inv(lon0, lat0, lon1, lat1)[2], WGS84.inv(lon0, lat0, lon2, lat2)[2]


def metres_per_unit(crs, x, y, step_x, step_y) -> tuple[float, float]:
    """Ground metres per CRS unit along x and y at (x, y), measured with pyproj."""
    tr = to_lonlat(crs)
    a, b = tr.transform(x - step_x / 2, y), tr.transform(x + step_x / 2, y)
    c, d = tr.transform(x, y - step_y / 2), tr.transform(x, y + step_y / 2)
    return WGS84.inv(*a, *b)[2] / step_x, WGS84.inv(*c, *d)[2] / step_y


def assert_bounds_equal(grid, bbox):
    w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    left, bottom, right, top = grid.bounds
    assert left == pytest.approx(bbox[0], abs=1e-6 * w)
    assert right == pytest.approx(bbox[2], abs=1e-6 * w)
    assert bottom == pytest.approx(bbox[1], abs=1e-6 * h)
    assert top == pytest.approx(bbox[3], abs=1e-6 * h)
    # north-up, no rotation
    t = grid.transform
    assert t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0


def assert_pixels_are_level_pixels(grid, bbox, level, tol=0.03):
    # Web Mercator grids use the tile pixel in CRS units, which on the WGS84 ellipsoid is
    # up to ~0.7 % off the spherical ground size; other grids follow the ground exactly.
    count_tol = 7e-3 if grid.crs.to_epsg() == 3857 else 1e-3
    lon, lat = centre_lonlat(bbox, grid.crs)
    want = google_pixel_m(level, lat)
    mx, my = measured_pixel_m(grid)
    assert mx == pytest.approx(want, rel=tol)
    assert my == pytest.approx(want, rel=tol)
    assert mx == pytest.approx(my, rel=0.01)  # square on the ground
    # size: the extent holds round(extent / ideal pixel) pixels
    w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    gx, gy = metres_per_unit(grid.crs, (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2,
                             w * 1e-4, h * 1e-4)
    cols, rows = w * gx / want, h * gy / want
    assert abs(grid.width - cols) <= 0.5 + count_tol * cols
    assert abs(grid.height - rows) <= 0.5 + count_tol * rows
    assert grid.ground_resolution == pytest.approx(want, rel=1e-6)
    assert grid.centre_lonlat[1] == pytest.approx(lat, abs=1e-6)


# --------------------------------------------------------------------------------------------
# Grids in the extent's own CRS


CASES = [
    # (id, crs, bbox, level)
    ("utm32", "EPSG:32632", (400000.0, 5400000.0, 401500.0, 5401100.0), 15),
    ("utm32-fine", "EPSG:32632", (455000.0, 5410000.0, 455400.0, 5410300.0), 18),
    ("utm33s", "EPSG:32733", (500000.0, 7000000.0, 530000.0, 7025000.0), 12),
    ("webmerc-nyc", "EPSG:3857", (-8240000.0, 4970000.0, -8238500.0, 4971200.0), 15),
    ("webmerc-60n", "EPSG:3857", (2000000.0, 8400000.0, 2003000.0, 8402500.0), 15),
    ("webmerc-proj", WEBMERC_PROJ, (1000000.0, -5000000.0, 1040000.0, -4970000.0), 12),
    ("wgs84-eq", "EPSG:4326", (11.0, -0.02, 11.03, 0.005), 15),
    ("wgs84-45", "EPSG:4326", (7.00, 45.00, 7.012, 45.01), 16),
    ("wgs84-70", "EPSG:4326", (25.0, 70.0, 25.015, 70.005), 16),
    ("wgs84-s70", "EPSG:4326", (-60.0, -70.005, -59.985, -70.0), 16),
    ("nad83-ny-usft", "EPSG:2263", (980000.0, 190000.0, 985000.0, 194000.0), 15),
    ("tmerc-k09", "+proj=tmerc +lat_0=45 +lon_0=-100 +k=0.9 +x_0=100000 +y_0=-200000 "
     "+ellps=GRS80 +units=m +no_defs", (95000.0, -205000.0, 106000.0, -196000.0), 13),
    ("tmerc-ft", "+proj=tmerc +lat_0=30 +lon_0=20 +k=1 +x_0=0 +y_0=0 +datum=WGS84 "
     "+units=ft +no_defs", (50000.0, 20000.0, 55000.0, 24000.0), 14),
    ("wkt-lcc", CRS("+proj=lcc +lat_1=33 +lat_2=45 +lat_0=39 +lon_0=-96 +datum=WGS84 "
                    "+units=m +no_defs").to_wkt(), (-300000.0, 100000.0, -290000.0, 108000.0), 13),
    ("wkt-utm", CRS.from_epsg(32618).to_wkt(), (583000.0, 4506000.0, 584000.0, 4507000.0), 16),
    ("laea-europe", "EPSG:3035", (4321000.0, 3210000.0, 4331000.0, 3218000.0), 13),
    ("polar-south", "EPSG:3031", (1000000.0, 1000000.0, 1020000.0, 1015000.0), 11),
]


@pytest.mark.parametrize("name,crs,bbox,level", CASES, ids=[c[0] for c in CASES])
def test_grid_in_own_crs(name, crs, bbox, level):
    grid = build_grid(bbox, crs, LevelRequest(level=level))
    assert grid.crs.equals(CRS.from_user_input(crs))
    assert grid.level == level
    assert not grid.level_choice.clamped
    assert_bounds_equal(grid, bbox)
    assert_pixels_are_level_pixels(grid, bbox, level)
    assert grid.width >= 100 and grid.height >= 100  # the cases are meant to be sizeable


@pytest.mark.parametrize("name,crs,bbox,level",
                         [c for c in CASES if c[1] in ("EPSG:3857", WEBMERC_PROJ)],
                         ids=[c[0] for c in CASES if c[1] in ("EPSG:3857", WEBMERC_PROJ)])
def test_web_mercator_pixel_is_exactly_the_tile_pixel(name, crs, bbox, level):
    grid = build_grid(bbox, crs, LevelRequest(level=level))
    px = mercantile_pixel_units(level)
    w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    assert grid.width == round(w / px)
    assert grid.height == round(h / px)
    # only the snapping stretch (< half a pixel over the whole side) separates them
    assert abs(grid.transform.a / px - 1) <= 1 / (2 * grid.width) + 1e-12
    assert abs(-grid.transform.e / px - 1) <= 1 / (2 * grid.height) + 1e-12


def test_web_mercator_tile_extent_gives_the_tile_grid():
    # a level-16 tile drawn at level 17 is exactly 512 x 512 level-17 pixels, at any latitude
    for lon, lat in [(8.3, 48.85), (25.0, 70.0), (-43.2, -22.9)]:
        b = mercantile.xy_bounds(mercantile.tile(lon, lat, 16))
        grid = build_grid((b.left, b.bottom, b.right, b.top), "EPSG:3857", LevelRequest(level=17))
        assert (grid.width, grid.height) == (512, 512)
        assert grid.transform.a == pytest.approx(mercantile_pixel_units(17), rel=1e-9)
        assert -grid.transform.e == pytest.approx(mercantile_pixel_units(17), rel=1e-9)
        assert (grid.transform.c, grid.transform.f) == pytest.approx((b.left, b.top), abs=1e-6)


def test_web_mercator_pixel_does_not_follow_latitude_in_crs_units():
    # the same CRS-unit extent at 0 and 60 degrees: same pixel count in 3857 ...
    eq = build_grid((0.0, 0.0, 3000.0, 2000.0), "EPSG:3857", LevelRequest(level=15))
    n60 = build_grid((0.0, 8390000.0, 3000.0, 8392000.0), "EPSG:3857", LevelRequest(level=15))
    assert (eq.width, eq.height) == (n60.width, n60.height)
    # ... but not in UTM, where a CRS metre is a ground metre
    lo = build_grid((500000.0, 100000.0, 503000.0, 102000.0), "EPSG:32631",
                    LevelRequest(level=14))
    hi = build_grid((500000.0, 6650000.0, 503000.0, 6652000.0), "EPSG:32631",
                    LevelRequest(level=14))
    assert hi.width == pytest.approx(2 * lo.width, rel=0.02)


@pytest.mark.parametrize("lat", [0.0, 45.0, 70.0])
def test_geographic_pixels_differ_in_degrees_but_are_square_on_ground(lat):
    bbox = (10.0, lat, 10.02, lat + 0.01)
    grid = build_grid(bbox, "EPSG:4326", LevelRequest(level=15))
    assert_bounds_equal(grid, bbox)
    # degrees of longitude and latitude per ground metre at the centre, from pyproj.Geod
    clat = lat + 0.005
    m_per_deg_lon = WGS84.inv(10.0, clat, 10.001, clat)[2] / 0.001
    m_per_deg_lat = WGS84.inv(10.01, clat - 0.0005, 10.01, clat + 0.0005)[2] / 0.001
    ratio = grid.transform.a / -grid.transform.e
    assert ratio == pytest.approx(m_per_deg_lat / m_per_deg_lon, rel=0.01)
    if lat >= 45:
        assert ratio > 1.3  # clearly not square in degrees
    assert_pixels_are_level_pixels(grid, bbox, 15)


def test_us_survey_feet_pixel_is_in_feet():
    bbox = (980000.0, 190000.0, 985000.0, 194000.0)  # Manhattan, EPSG:2263 (ftUS)
    grid = build_grid(bbox, "EPSG:2263", LevelRequest(level=15))
    lon, lat = centre_lonlat(bbox, "EPSG:2263")
    metres = google_pixel_m(15, lat)  # ~3.62 m
    us_ft = 1200.0 / 3937.0
    # pixel in CRS units ~ metres / 0.3048006 (within the projection's scale factor, ~1e-4)
    assert grid.transform.a == pytest.approx(metres / us_ft, rel=0.01)
    assert grid.transform.a > 10.0  # clearly feet, not metres


def test_resolution_request_selects_level_from_tiles():
    bbox = (400000.0, 5400000.0, 401500.0, 5401100.0)  # ~48.7 N
    lon, lat = centre_lonlat(bbox, "EPSG:32632")
    for level in (14, 15, 16, 17):
        grid = build_grid(bbox, "EPSG:32632", LevelRequest(resolution=google_pixel_m(level, lat)),
                          max_pixels=4_000_000)
        assert grid.level == level
        assert_pixels_are_level_pixels(grid, bbox, level)


def test_scale_request_selects_level():
    bbox = (400000.0, 5400000.0, 401500.0, 5401100.0)  # ~48.7 N
    # 1:10,000 at 96 dpi = 2.646 m; level 15 at 48.75 N is 3.15 m (ratio 1.19), 16 is 1.57 m
    grid = build_grid(bbox, "EPSG:32632", LevelRequest(scale_denominator=10000, dpi=96))
    assert grid.level == 15
    assert "1:10,000" in grid.level_choice.message


def test_clamped_request_reports_clamping():
    bbox = (400000.0, 5400000.0, 400100.0, 5400080.0)
    grid = build_grid(bbox, "EPSG:32632", LevelRequest(resolution=0.01))
    assert grid.level == 18 and grid.level_choice.clamped
    assert "clamped" in grid.level_choice.message
    big = (300000.0, 5300000.0, 400000.0, 5400000.0)
    grid = build_grid(big, "EPSG:32632", LevelRequest(resolution=5000.0))
    assert grid.level == 10 and grid.level_choice.clamped


def test_auto_level_puts_long_side_near_auto_size():
    bbox = (400000.0, 5400000.0, 403000.0, 5401000.0)
    grid = build_grid(bbox, "EPSG:32632", LevelRequest(auto_size=512))
    # nearest level in log2: the long side is within a factor sqrt(2) of 512 px
    assert 512 / math.sqrt(2) <= grid.width <= 512 * math.sqrt(2)
    assert_pixels_are_level_pixels(grid, bbox, grid.level)


# --------------------------------------------------------------------------------------------
# out_crs


@pytest.mark.parametrize(
    "bbox,crs,epsg",
    [
        ((8.29, 48.84, 8.31, 48.86), "EPSG:4326", 32632),  # Karlsruhe
        ((-74.01, 40.70, -73.99, 40.71), "EPSG:4326", 32618),  # New York
        ((18.40, -33.93, 18.43, -33.91), "EPSG:4326", 32734),  # Cape Town
        ((151.19, -33.88, 151.22, -33.86), "EPSG:4326", 32756),  # Sydney
        ((-58.40, -34.62, -58.37, -34.60), "EPSG:4326", 32721),  # Buenos Aires
        ((980000.0, 190000.0, 985000.0, 194000.0), "EPSG:2263", 32618),  # NYC in ftUS
        ((922000.0, 6240000.0, 924000.0, 6241500.0), "EPSG:3857", 32632),  # 8.3E 48.85N
    ],
)
def test_out_crs_utm_zone_of_centre(bbox, crs, epsg):
    grid = build_grid(bbox, crs, LevelRequest(level=15), out_crs="utm")
    assert grid.crs.to_epsg() == epsg
    assert_contains_transformed(grid, bbox, crs)
    out_bbox = grid.bounds
    assert_pixels_are_level_pixels(grid, out_bbox, 15)


def assert_contains_transformed(grid, bbox, crs, n=50):
    """Every point of the densified input boundary, projected by pyproj, lies inside."""
    tr = Transformer.from_crs(CRS.from_user_input(crs), grid.crs, always_xy=True)
    left, bottom, right, top = grid.bounds
    slack = 1e-9 * max(right - left, top - bottom)
    xs = [bbox[0] + (bbox[2] - bbox[0]) * i / n for i in range(n + 1)]
    ys = [bbox[1] + (bbox[3] - bbox[1]) * i / n for i in range(n + 1)]
    pts = ([(x, bbox[1]) for x in xs] + [(x, bbox[3]) for x in xs]
           + [(bbox[0], y) for y in ys] + [(bbox[2], y) for y in ys])
    for x, y in pts:
        px, py = tr.transform(x, y)
        assert left - slack <= px <= right + slack
        assert bottom - slack <= py <= top + slack
    # and not absurdly larger than the projected input
    px = [tr.transform(x, y) for x, y in pts]
    assert min(p[0] for p in px) == pytest.approx(left, abs=1e-3 * (right - left))
    assert max(p[1] for p in px) == pytest.approx(top, abs=1e-3 * (top - bottom))


def test_out_crs_utm_is_case_insensitive():
    grid = build_grid((8.29, 48.84, 8.31, 48.86), "EPSG:4326", LevelRequest(level=15),
                      out_crs=" UTM ")
    assert grid.crs.to_epsg() == 32632


def test_out_crs_web_mercator_from_utm():
    bbox = (400000.0, 5400000.0, 401500.0, 5401100.0)
    for out in ("EPSG:3857", 3857, CRS.from_epsg(3857)):
        grid = build_grid(bbox, "EPSG:32632", LevelRequest(level=15), out_crs=out)
        assert grid.crs.to_epsg() == 3857
        assert_contains_transformed(grid, bbox, "EPSG:32632")
        px = mercantile_pixel_units(15)
        assert abs(grid.transform.a / px - 1) <= 1 / (2 * grid.width) + 1e-12
        assert abs(-grid.transform.e / px - 1) <= 1 / (2 * grid.height) + 1e-12


def test_out_crs_geographic_from_projected():
    bbox = (400000.0, 5400000.0, 401500.0, 5401100.0)
    grid = build_grid(bbox, "EPSG:32632", LevelRequest(level=15), out_crs="EPSG:4326")
    assert grid.crs.to_epsg() == 4326
    assert_contains_transformed(grid, bbox, "EPSG:32632")
    assert_pixels_are_level_pixels(grid, grid.bounds, 15)


def test_out_crs_same_as_input_keeps_bounds():
    bbox = (400000.0, 5400000.0, 401500.0, 5401100.0)
    grid = build_grid(bbox, "EPSG:32632", LevelRequest(level=15), out_crs="EPSG:32632")
    assert_bounds_equal(grid, bbox)


def test_projected_crs_continuous_across_antimeridian_is_fine():
    # EPSG:3832 (PDC Mercator, centred on 150 E) is continuous across 180 degrees
    x180 = Transformer.from_crs("EPSG:4326", "EPSG:3832", always_xy=True).transform(180.0, 0.0)[0]
    bbox = (x180 - 20000.0, 0.0, x180 + 20000.0, 30000.0)
    grid = build_grid(bbox, "EPSG:3832", LevelRequest(level=11))
    assert_bounds_equal(grid, bbox)
    assert_pixels_are_level_pixels(grid, bbox, 11)
    # ... but not once asked for in lon/lat
    with pytest.raises(InputError, match="antimeridian"):
        build_grid(bbox, "EPSG:3832", LevelRequest(level=11), out_crs="EPSG:4326")


# --------------------------------------------------------------------------------------------
# CRS helpers


@pytest.mark.parametrize(
    "lon,lat,epsg",
    [(8.3, 48.85, 32632), (-74.0, 40.7, 32618), (18.4, -33.9, 32734), (151.2, -33.9, 32756),
     (-0.1, 51.5, 32630), (139.7, 35.7, 32654), (-70.6, -33.4, 32719), (174.8, -41.3, 32760),
     (-177.0, 10.0, 32601), (2.5, -10.0, 32731)],
)
def test_utm_crs_for_hand_known(lon, lat, epsg):
    assert utm_crs_for(lon, lat).to_epsg() == epsg


def test_utm_crs_for_matches_zone_formula():
    # every third zone, off its centre and away from its edges, in both hemispheres
    lats = (-70.0, -20.0, 5.0, 45.0, 75.0, -1.0)
    for i, lon10 in enumerate(range(-1795, 1800, 180)):
        lon = lon10 / 10.0 + 0.7 * (-1) ** i
        for lat in (lats[i % 6], -lats[(i + 3) % 6]):
            zone = int((lon + 180.0) // 6.0) + 1
            want = (32600 if lat >= 0 else 32700) + zone
            if 56 <= lat < 64 and 3 <= lon < 12 or lat >= 72 and 0 <= lon < 42:
                continue  # Norway / Svalbard: EPSG's areas of use differ from MGRS
            assert utm_crs_for(lon, lat).to_epsg() == want, (lon, lat)


@pytest.mark.filterwarnings("ignore:You will likely lose important projection information")
def test_parse_crs_forms():
    want = CRS.from_epsg(32632)
    for given in ("EPSG:32632", "epsg:32632", 32632, want, want.to_wkt(), want.to_proj4()):
        assert parse_crs(given).equals(want) or parse_crs(given).to_epsg() == 32632


@pytest.mark.parametrize("bad", ["EPSG:999999", "not a crs", "+proj=nonsense", "", "   "])
def test_parse_crs_rejects_unknown(bad):
    with pytest.raises(InputError, match="CRS"):
        parse_crs(bad)


def test_parse_crs_rejects_geocentric():
    with pytest.raises(InputError, match="neither projected nor geographic"):
        parse_crs("EPSG:4978")


def test_is_web_mercator():
    assert is_web_mercator(CRS.from_epsg(3857))
    assert is_web_mercator(CRS(CRS.from_epsg(3857).to_wkt()))
    assert is_web_mercator(CRS(WEBMERC_PROJ))
    # World Mercator on the ellipsoid is not Google's grid
    assert not is_web_mercator(CRS.from_epsg(3395))
    assert not is_web_mercator(CRS("+proj=merc +ellps=WGS84 +units=m"))
    assert not is_web_mercator(CRS.from_epsg(32632))
    assert not is_web_mercator(CRS.from_epsg(4326))


def test_ellipsoidal_mercator_pixel_is_not_the_web_mercator_pixel():
    # EPSG:3395 at 70 N: CRS units per ground metre differ from 3857's by ~0.3 %, and the
    # grid follows the ground, not 3857's unit.
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3395", always_xy=True).transform(25.0, 70.0)
    bbox = (x, y, x + 20000.0, y + 20000.0)
    grid = build_grid(bbox, "EPSG:3395", LevelRequest(level=12))
    assert_pixels_are_level_pixels(grid, bbox, 12, tol=0.005)


# --------------------------------------------------------------------------------------------
# The model canvas


def webmerc_grid(cols: int, rows: int, level: int = 17, x0: float = 1.0e6, y0: float = 2.0e6):
    px = mercantile_pixel_units(level)
    return build_grid((x0, y0, x0 + cols * px, y0 + rows * px), "EPSG:3857",
                      LevelRequest(level=level))


def test_small_output_sits_centred_on_256_canvas():
    grid = webmerc_grid(40, 30)
    assert (grid.width, grid.height) == (40, 30)
    assert (grid.canvas_width, grid.canvas_height) == (256, 256)
    assert grid.canvas_offset == (108, 113)
    assert_canvas_transform(grid)


def test_canvas_rounds_up_to_multiple_of_8():
    grid = webmerc_grid(300, 260)
    assert (grid.width, grid.height) == (300, 260)
    assert (grid.canvas_width, grid.canvas_height) == (304, 264)
    assert grid.canvas_offset == (2, 2)
    assert_canvas_transform(grid)


@pytest.mark.parametrize(
    "cols,rows,canvas",
    [(1, 1, (256, 256)), (255, 256, (256, 256)), (257, 100, (264, 256)),
     (512, 513, (512, 520)), (1001, 300, (1008, 304)), (999, 777, (1000, 784))],
)
def test_canvas_sizes(cols, rows, canvas):
    grid = webmerc_grid(cols, rows, level=18)
    assert (grid.width, grid.height) == (cols, rows)
    assert (grid.canvas_width, grid.canvas_height) == canvas
    assert grid.canvas_width % 8 == 0 and grid.canvas_height % 8 == 0
    col, row = grid.canvas_offset
    # centred: the margins on either side differ by at most one pixel
    assert abs(col - (grid.canvas_width - cols - col)) <= 1
    assert abs(row - (grid.canvas_height - rows - row)) <= 1
    assert col >= 0 and row >= 0
    assert_canvas_transform(grid)


def assert_canvas_transform(grid):
    col, row = grid.canvas_offset
    ct: Affine = grid.canvas_transform
    assert ct * (col, row) == pytest.approx(grid.transform * (0, 0), abs=1e-6)
    assert ct * (col + grid.width, row + grid.height) == pytest.approx(
        grid.transform * (grid.width, grid.height), abs=1e-6)
    assert (ct.a, ct.e) == (grid.transform.a, grid.transform.e)
    # the canvas extends beyond the output by the margins, in the same pixels
    assert ct * (0, 0) == pytest.approx(
        (grid.bounds[0] - col * grid.transform.a, grid.bounds[3] - row * grid.transform.e),
        abs=1e-6)


def test_canvas_of_small_utm_extent_centres_output():
    bbox = (455000.0, 5410000.0, 455100.0, 5410060.0)  # 100 x 60 m at level 17 (~0.79 m)
    grid = build_grid(bbox, "EPSG:32632", LevelRequest(level=17))
    assert grid.width < 256 and grid.height < 256
    assert (grid.canvas_width, grid.canvas_height) == (256, 256)
    cx, cy = grid.canvas_transform * (128, 128)
    assert cx == pytest.approx(455050.0, abs=grid.transform.a)
    assert cy == pytest.approx(5410030.0, abs=-grid.transform.e)


# --------------------------------------------------------------------------------------------
# Bad input: one clear InputError each


UTM_BBOX = (400000.0, 5400000.0, 401500.0, 5401100.0)


@pytest.mark.parametrize(
    "bbox,crs,kwargs,word",
    [
        # beyond Web Mercator's latitude limit
        ((0.0, 86.0, 1.0, 87.0), "EPSG:4326", {}, "limit"),
        ((0.0, 86.0, 0.01, 86.01), "EPSG:4326", {"request": LevelRequest(level=15)}, "limit"),
        ((0.0, -89.0, 1.0, -86.0), "EPSG:4326", {}, "latitude"),
        ((0.0, -86.01, 0.01, -86.0), "EPSG:4326", {"request": LevelRequest(level=15)},
         "latitude"),
        ((-150000.0, -150000.0, 150000.0, 150000.0), "EPSG:3413", {}, "latitude"),
        ((-1000.0, -1000.0, 1000.0, 1000.0), "EPSG:3413", {"request": LevelRequest(level=15)},
         "latitude"),
        ((-8240000.0, 20100000.0, -8238000.0, 20102000.0), "EPSG:3857", {}, "limit"),
        ((-8240000.0, 20100000.0, -8238000.0, 20102000.0), "EPSG:3857",
         {"request": LevelRequest(level=15)}, "limit"),
        ((0.0, 89.5, 1.0, 91.0), "EPSG:4326", {}, "90"),
        # antimeridian
        ((170.0, 0.0, 190.0, 1.0), "EPSG:4326", {}, "antimeridian"),
        ((179.5, 0.0, -179.5, 1.0), "EPSG:4326", {}, "antimeridian"),
        ((-181.0, 0.0, -179.0, 1.0), "EPSG:4326", {}, "antimeridian"),
        # degenerate
        ((400000.0, 5400000.0, 400000.0, 5401000.0), "EPSG:32632", {}, "zero area"),
        ((400000.0, 5400000.0, 401000.0, 5400000.0), "EPSG:32632", {}, "zero area"),
        ((8.0, 48.0, 8.0, 48.0), "EPSG:4326", {}, "zero area"),
        # inverted
        ((401000.0, 5400000.0, 400000.0, 5401000.0), "EPSG:32632", {}, "inverted"),
        ((400000.0, 5401000.0, 401000.0, 5400000.0), "EPSG:32632", {}, "inverted"),
        ((8.0, 48.1, 8.1, 48.0), "EPSG:4326", {}, "inverted"),
        # non-finite / malformed
        ((float("nan"), 5400000.0, 401000.0, 5401000.0), "EPSG:32632", {}, "finite"),
        ((400000.0, 5400000.0, float("inf"), 5401000.0), "EPSG:32632", {}, "finite"),
        ((400000.0, -float("inf"), 401000.0, 5401000.0), "EPSG:32632", {}, "finite"),
        ((400000.0, 5400000.0, 401000.0), "EPSG:32632", {}, "four numbers"),
        (("a", "b", "c", "d"), "EPSG:32632", {}, "four numbers"),
        (None, "EPSG:32632", {}, "four numbers"),
        # absurd
        ((0.0, 0.0, 1.0e6, 1.0e6), "EPSG:32632", {"request": LevelRequest(level=18)}, "limit"),
        ((-180.0, -80.0, 180.0, 80.0), "EPSG:4326", {"request": LevelRequest(level=10)},
         "limit"),
        (UTM_BBOX, "EPSG:32632", {"request": LevelRequest(level=15), "max_pixels": 10_000},
         "limit"),
        # smaller than one pixel
        ((400000.0, 5400000.0, 400000.5, 5400000.5), "EPSG:32632",
         {"request": LevelRequest(level=10)}, "smaller than one"),
        # CRS
        (UTM_BBOX, "EPSG:999999", {}, "unknown CRS"),
        (UTM_BBOX, "definitely not a crs", {}, "unknown CRS"),
        (UTM_BBOX, "", {}, "no CRS"),
        (UTM_BBOX, "EPSG:32632", {"out_crs": "EPSG:999999"}, "unknown CRS"),
        (UTM_BBOX, "EPSG:4978", {}, "neither projected nor geographic"),
        ((0.2, 84.5, 0.8, 84.6), "EPSG:4326", {"out_crs": "utm"}, "UTM"),
        # level out of range and bad requests
        (UTM_BBOX, "EPSG:32632", {"request": LevelRequest(level=9)}, "range"),
        (UTM_BBOX, "EPSG:32632", {"request": LevelRequest(level=19)}, "range"),
        (UTM_BBOX, "EPSG:32632", {"request": LevelRequest(level=0)}, "range"),
        (UTM_BBOX, "EPSG:32632", {"request": LevelRequest(resolution=0.0)}, "resolution"),
        (UTM_BBOX, "EPSG:32632", {"request": LevelRequest(resolution=-2.0)}, "resolution"),
        (UTM_BBOX, "EPSG:32632", {"request": LevelRequest(scale_denominator=0.0)}, "scale"),
        (UTM_BBOX, "EPSG:32632", {"request": LevelRequest(scale_denominator=5000, dpi=0)},
         "dpi"),
    ],
)
def test_bad_input_raises_clear_input_error(bbox, crs, kwargs, word):
    with pytest.raises(InputError) as exc:
        build_grid(bbox, crs, **kwargs)
    assert word.lower() in str(exc.value).lower()
    assert isinstance(exc.value, ValueError)
    assert "\n" not in str(exc.value)


def test_level_request_refuses_two_ways_of_asking():
    with pytest.raises(InputError, match="only one"):
        LevelRequest(level=15, resolution=1.0)
    with pytest.raises(InputError, match="only one"):
        LevelRequest(resolution=1.0, scale_denominator=5000)


def test_max_pixels_refuses_more():
    px = mercantile_pixel_units(16)
    ok = build_grid((1e6, 2e6, 1e6 + 99 * px, 2e6 + 100 * px), "EPSG:3857",
                    LevelRequest(level=16), max_pixels=10_000)
    assert (ok.width, ok.height) == (99, 100)
    with pytest.raises(InputError, match="limit"):
        build_grid((1e6, 2e6, 1e6 + 101 * px, 2e6 + 100 * px), "EPSG:3857",
                   LevelRequest(level=16), max_pixels=10_000)


def test_max_pixels_accepts_an_output_exactly_at_the_limit():
    px = mercantile_pixel_units(16)
    grid = build_grid((1e6, 2e6, 1e6 + 100 * px, 2e6 + 100 * px), "EPSG:3857",
                      LevelRequest(level=16), max_pixels=10_000)
    assert grid.width * grid.height == 10_000


def test_output_never_exceeds_max_pixels_after_rounding():
    px = mercantile_pixel_units(18)
    bbox = (1.0e6, 2.0e6, 1.0e6 + 7.6 * px, 2.0e6 + 13.1 * px)
    try:
        grid = build_grid(bbox, "EPSG:3857", LevelRequest(level=18), max_pixels=100)
    except InputError:
        return  # refusing is a correct answer too
    assert grid.width * grid.height <= 100


def test_web_mercator_extent_crossing_the_antimeridian_is_refused():
    edge = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(180.0, 0.0)[0]
    assert 20_000_000 < edge < 20_100_000
    with pytest.raises(InputError, match="antimeridian"):
        build_grid((20_000_000.0, 0.0, 20_100_000.0, 10_000.0), "EPSG:3857",
                   LevelRequest(level=12))
