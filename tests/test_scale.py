"""Zoom level <-> ground resolution <-> map scale, checked against independent references.

The reference for Google's tiles is ``mercantile`` (an independent implementation of the
XYZ/Web Mercator tiling scheme) plus geodesic distances from ``pyproj.Geod``: the ground size
of a level-L pixel is *measured* on a tile, never recomputed with the module's own formula.
"""

from __future__ import annotations

import math
import random

import mercantile
import pytest
from pyproj import Geod

from text2earth_qgis.core.contract import scale

LATITUDES = [0.0, 10.0, -10.0, 30.0, -30.0, 45.0, 60.0, 70.0, -70.0, 80.0, 85.0, -85.0]
LEVELS = list(range(10, 19))
# Google's tiles are spherical Mercator on a sphere of radius 6378137 m: measured on that
# sphere, a pixel's ground size is exact; on the WGS84 ellipsoid it differs by < 0.7 %.
SPHERE = Geod(a=6378137.0, b=6378137.0)
WGS84 = Geod(ellps="WGS84")
# Nominal Git-10M labels, by hand: level 17 = 1 m, each level up halves it.
NOMINAL = {10: 128.0, 11: 64.0, 12: 32.0, 13: 16.0, 14: 8.0, 15: 4.0, 16: 2.0, 17: 1.0, 18: 0.5}


def tile_pixel_ground(level: int, lat: float, lon: float = 7.3, geod: Geod = SPHERE):
    """(east-west, north-south) metres covered by one level-L tile pixel at (lon, lat).

    East-west: a tile spans (east-west)/256 degrees of longitude per pixel; north-south: one
    pixel is (tile height in mercator metres)/256, converted back to latitudes by mercantile.
    """
    tile = mercantile.tile(lon, lat, level)
    ll = mercantile.bounds(tile)
    dlon = (ll.east - ll.west) / 256.0
    dx = geod.inv(lon - dlon / 2, lat, lon + dlon / 2, lat)[2]
    xy = mercantile.xy_bounds(tile)
    res_y = (xy.top - xy.bottom) / 256.0
    x, y = mercantile.xy(lon, lat)
    _, lat0 = mercantile.lnglat(x, y - res_y / 2)
    _, lat1 = mercantile.lnglat(x, y + res_y / 2)
    dy = geod.inv(lon, lat0, lon, lat1)[2]
    return dx, dy


def ref_ground(level: int, lat: float) -> float:
    return tile_pixel_ground(level, lat)[0]


def ref_level(resolution: float, lat: float | None) -> tuple[int, float]:
    """Nearest level (in log2 of the resolution ratio) over ALL integer levels, unclamped,
    and the distance in levels to the second best (to skip near-ties)."""
    if lat is None:
        cands = {lv: 2.0 ** (17 - lv) for lv in range(-5, 40)}
        # sanity of the hand table against the generated one
        for lv, v in NOMINAL.items():
            assert cands[lv] == v
    else:
        # Levels outside 10..18: scale the measured level-10 / level-18 pixel by powers of 2
        # (one level = half the pixel, which the tests below check on tiles too).
        r10, r18 = ref_ground(10, lat), ref_ground(18, lat)
        cands = {lv: (r10 * 2.0 ** (10 - lv) if lv < 10 else r18 * 2.0 ** (18 - lv))
                 for lv in range(-5, 40) if not 10 <= lv <= 18}
        cands.update({lv: ref_ground(lv, lat) for lv in LEVELS})
    dist = sorted((abs(math.log2(resolution / r)), lv) for lv, r in cands.items())
    return dist[0][1], dist[1][0] - dist[0][0]


# --------------------------------------------------------------------------------------------
# Constants and the known numbers of the issue


def test_constants():
    assert scale.MIN_LEVEL == 10
    assert scale.MAX_LEVEL == 18
    # Web Mercator's latitude limit is the top edge of the single level-0 tile.
    assert scale.MAX_LATITUDE == pytest.approx(mercantile.bounds(mercantile.Tile(0, 0, 0)).north,
                                               abs=1e-9)


@pytest.mark.parametrize("level,metres", sorted(NOMINAL.items()))
def test_nominal_resolution_known_numbers(level, metres):
    assert scale.nominal_resolution(level) == metres


def test_nominal_resolution_spot_values_from_issue():
    assert scale.nominal_resolution(17) == 1.0
    assert scale.nominal_resolution(18) == 0.5
    assert scale.nominal_resolution(10) == 128.0


# --------------------------------------------------------------------------------------------
# Mercantile tiles as the independent implementation of Google's grid


@pytest.mark.parametrize("level", LEVELS)
def test_mercator_resolution_equals_mercantile_tile_pixel(level):
    for lon, lat in [(0.1, 0.1), (8.3, 48.85), (-74.0, 40.7), (151.2, -33.9), (20.0, 84.9)]:
        b = mercantile.xy_bounds(mercantile.tile(lon, lat, level))
        assert scale.mercator_resolution(level) == pytest.approx((b.right - b.left) / 256,
                                                                 rel=1e-12)
        assert scale.mercator_resolution(level) == pytest.approx((b.top - b.bottom) / 256,
                                                                 rel=1e-12)


@pytest.mark.parametrize("lat", LATITUDES)
def test_ground_resolution_matches_geodesic_size_of_tile_pixel(lat):
    for level in LEVELS:
        dx, dy = tile_pixel_ground(level, lat)
        # Mercator is conformal: the tile pixel is square on the (spherical) ground.
        assert dx == pytest.approx(dy, rel=1e-6)
        assert scale.ground_resolution(level, lat) == pytest.approx(dx, rel=1e-7)
        # and on the real (WGS84) Earth within the sphere/ellipsoid difference
        ex, ey = tile_pixel_ground(level, lat, geod=WGS84)
        assert scale.ground_resolution(level, lat) == pytest.approx(ex, rel=7e-3)
        assert scale.ground_resolution(level, lat) == pytest.approx(ey, rel=7e-3)


def test_ground_resolution_known_values():
    # level 17 at the equator: 1.194 m (the well-known table value), level 10: 152.87 m
    assert scale.ground_resolution(17, 0.0) == pytest.approx(1.19432856, rel=1e-8)
    assert scale.ground_resolution(10, 0.0) == pytest.approx(152.8740565, rel=1e-8)
    # at 60 degrees a pixel is half as wide as at the equator
    assert scale.ground_resolution(14, 60.0) == pytest.approx(
        scale.ground_resolution(14, 0.0) / 2, rel=1e-12)


@pytest.mark.parametrize("lat", [85.06, -85.06, 89.0, 90.0, float("nan"), float("inf")])
def test_ground_resolution_refuses_latitudes_beyond_web_mercator(lat):
    with pytest.raises(ValueError, match="limit"):
        scale.ground_resolution(15, lat)


def test_check_latitude():
    scale.check_latitude(scale.MAX_LATITUDE)
    scale.check_latitude(-scale.MAX_LATITUDE)
    scale.check_latitude(0.0)
    for bad in (85.052, -85.052, float("nan"), float("-inf")):
        with pytest.raises(ValueError, match="latitude"):
            scale.check_latitude(bad)


# --------------------------------------------------------------------------------------------
# Level for a resolution


@pytest.mark.parametrize("lat", LATITUDES)
def test_level_for_tile_pixel_resolution_is_that_level(lat):
    for level in LEVELS:
        measured = ref_ground(level, lat)
        choice = scale.level_for_resolution(measured, lat)
        assert choice.level == level
        assert not choice.clamped
        assert choice.exact_level == pytest.approx(level, abs=1e-6)
        # 30 % coarser / finer is still nearest to the same level (log2(1.3) = 0.38 < 0.5)
        if level > 10:
            assert scale.level_for_resolution(measured * 1.3, lat).level == level
        if level < 18:
            assert scale.level_for_resolution(measured / 1.3, lat).level == level
        # 50 % coarser is nearer to the next coarser level (log2(1.5) = 0.585 > 0.5)
        if level > 10:
            assert scale.level_for_resolution(measured * 1.5, lat).level == level - 1
        if level < 18:
            assert scale.level_for_resolution(measured / 1.5, lat).level == level + 1


def test_level_for_resolution_random_against_reference():
    rng = random.Random(1234)
    checked = 0
    for _ in range(300):
        lat = rng.uniform(-85.0, 85.0) if rng.random() < 0.8 else None
        resolution = 2.0 ** rng.uniform(-3.0, 9.0)
        want, margin = ref_level(resolution, lat)
        if margin < 0.01:  # too near a tie between two levels
            continue
        choice = scale.level_for_resolution(resolution, lat)
        assert choice.level == min(18, max(10, want)), (resolution, lat)
        assert choice.clamped == (not 10 <= want <= 18), (resolution, lat)
        checked += 1
    assert checked > 250


@pytest.mark.parametrize("level,metres", sorted(NOMINAL.items()))
def test_level_for_nominal_resolution(level, metres):
    choice = scale.level_for_resolution(metres)
    assert choice.level == level
    assert choice.exact_level == pytest.approx(level, abs=1e-12)
    assert not choice.clamped
    assert "clamped" not in choice.message


def test_level_for_resolution_nominal_differs_from_ground_at_latitude():
    # 1 m nominal is level 17; at latitude 60 level 17 is 0.6 m and level 16 1.19 m -> 16
    assert scale.level_for_resolution(1.0).level == 17
    assert scale.level_for_resolution(1.0, 60.0).level == 16
    assert scale.level_for_resolution(1.0, 0.0).level == 17


def test_clamped_fine_resolution():
    choice = scale.level_for_resolution(0.01)
    assert choice.level == 18
    assert choice.clamped
    assert choice.exact_level > 18.5
    assert "clamped" in choice.message
    assert "10..18" in choice.message
    at_lat = scale.level_for_resolution(0.01, 45.0)
    assert (at_lat.level, at_lat.clamped) == (18, True)
    assert "clamped" in at_lat.message


def test_clamped_coarse_resolution():
    choice = scale.level_for_resolution(10000.0)
    assert choice.level == 10
    assert choice.clamped
    assert choice.exact_level < 9.5
    assert "clamped" in choice.message
    at_lat = scale.level_for_resolution(10000.0, -30.0)
    assert (at_lat.level, at_lat.clamped) == (10, True)


@pytest.mark.parametrize("lat", [0.0, 45.0, 80.0])
def test_clamping_edges_against_tile_reference(lat):
    r18, r10 = ref_ground(18, lat), ref_ground(10, lat)
    half = math.sqrt(2.0)  # half a level in resolution ratio
    assert not scale.level_for_resolution(r18 / half * 1.01, lat).clamped
    c = scale.level_for_resolution(r18 / half * 0.99, lat)
    assert (c.level, c.clamped) == (18, True)
    assert not scale.level_for_resolution(r10 * half * 0.99, lat).clamped
    c = scale.level_for_resolution(r10 * half * 1.01, lat)
    assert (c.level, c.clamped) == (10, True)


def test_unclamped_message_names_the_level():
    choice = scale.level_for_resolution(4.0)
    assert choice.message.startswith("level 15")
    assert "clamped" not in choice.message


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), "1", None])
def test_level_for_resolution_rejects_bad_resolution(bad):
    with pytest.raises(ValueError, match="resolution"):
        scale.level_for_resolution(bad)


def test_level_for_resolution_rejects_latitude_beyond_limit():
    with pytest.raises(ValueError, match="limit"):
        scale.level_for_resolution(1.0, 86.0)


# --------------------------------------------------------------------------------------------
# Map scale


def test_resolution_for_scale_known_numbers():
    # 1:N at 96 dpi: one screen pixel is N * 0.0254 / 96 m (worked by hand)
    assert scale.resolution_for_scale(25000) == pytest.approx(6.6145833333, rel=1e-9)
    assert scale.resolution_for_scale(25000, 96) == pytest.approx(6.6145833333, rel=1e-9)
    assert scale.resolution_for_scale(3779.527559055, 96) == pytest.approx(1.0, rel=1e-9)
    assert scale.resolution_for_scale(10000, 254) == pytest.approx(1.0, rel=1e-12)
    assert scale.resolution_for_scale(1000, 72) == pytest.approx(0.352777778, rel=1e-8)


@pytest.mark.parametrize("n,dpi", [(0, 96), (-5, 96), (float("nan"), 96), (1000, 0),
                                   (1000, -96), (1000, float("inf"))])
def test_resolution_for_scale_rejects(n, dpi):
    with pytest.raises(ValueError):
        scale.resolution_for_scale(n, dpi)


def test_level_for_scale_known():
    # 1:25,000 at 96 dpi = 6.61 m: nominal 17 - log2(6.61) = 14.27 -> 14;
    # at the equator level 15 is 4.78 m (ratio 1.38) and 14 is 9.55 m (ratio 1.44) -> 15
    nominal = scale.level_for_scale(25000)
    assert nominal.level == 14 and not nominal.clamped
    assert scale.level_for_scale(25000, 0.0, 96).level == 15
    # 1:3,779.5 at 96 dpi is 1 m/px: nominal level 17
    assert scale.level_for_scale(3779.527559055, None, 96).level == 17
    # at 300 dpi one screen pixel is 3.125x smaller: 1:25,000 -> 2.12 m -> nominal 16
    assert scale.level_for_scale(25000, None, 300).level == 16
    # the message says where the level came from
    assert "1:25,000" in scale.level_for_scale(25000).message


def test_level_for_scale_random_against_reference():
    rng = random.Random(99)
    for _ in range(100):
        n = 10 ** rng.uniform(2.5, 6.5)
        dpi = rng.choice([72.0, 96.0, 150.0, 300.0])
        lat = rng.choice([None, rng.uniform(-80, 80)])
        metres = n * 0.0254 / dpi
        want, margin = ref_level(metres, lat)
        if margin < 0.01:
            continue
        choice = scale.level_for_scale(n, lat, dpi)
        assert choice.level == min(18, max(10, want))
        assert choice.clamped == (not 10 <= want <= 18)


def test_level_for_scale_clamps_and_says_so():
    tiny = scale.level_for_scale(100)  # 2.6 cm per pixel
    assert (tiny.level, tiny.clamped) == (18, True)
    assert "clamped" in tiny.message
    huge = scale.level_for_scale(50_000_000)
    assert (huge.level, huge.clamped) == (10, True)
    assert "clamped" in huge.message


# --------------------------------------------------------------------------------------------
# Level for an extent and output size


@pytest.mark.parametrize("lat", [0.0, 45.0, -70.0])
def test_level_for_extent_against_tiles(lat):
    for level in LEVELS:
        # an extent exactly 700 level-L pixels wide on the ground
        width_m = 700 * ref_ground(level, lat)
        assert scale.level_for_extent(width_m, 700, lat).level == level
        # the same extent squeezed into 350 px -> one level coarser (unless clamped)
        c = scale.level_for_extent(width_m, 350, lat)
        assert c.level == max(10, level - 1)
        assert c.clamped == (level == 10)


def test_level_for_extent_nominal():
    assert scale.level_for_extent(1000.0, 1000).level == 17  # 1 m
    assert scale.level_for_extent(512 * 128.0, 512).level == 10  # 128 m
    c = scale.level_for_extent(100.0, 1000)  # 0.1 m
    assert (c.level, c.clamped) == (18, True)


@pytest.mark.parametrize("width_m,px", [(1000.0, 0), (1000.0, -5), (0.0, 512), (-1.0, 512),
                                        (float("nan"), 512), (float("inf"), 512)])
def test_level_for_extent_rejects(width_m, px):
    with pytest.raises(ValueError):
        scale.level_for_extent(width_m, px, 10.0)


# --------------------------------------------------------------------------------------------
# Level table and level checks


@pytest.mark.parametrize("lat", [0.0, 52.5, -70.0])
def test_level_table(lat):
    table = scale.level_table(lat)
    assert [row[0] for row in table] == LEVELS
    for level, nominal, ground in table:
        assert nominal == NOMINAL[level]
        assert ground == pytest.approx(ref_ground(level, lat), rel=1e-7)


def test_level_table_default_is_equator():
    assert scale.level_table()[7][2] == pytest.approx(ref_ground(17, 0.0), rel=1e-7)


def test_level_table_refuses_high_latitude():
    with pytest.raises(ValueError, match="limit"):
        scale.level_table(87.0)


@pytest.mark.parametrize("level", LEVELS)
def test_check_level_accepts(level):
    assert scale.check_level(level) == level


@pytest.mark.parametrize("bad", [9, 19, 0, -1, 17.0, "17", True, None])
def test_check_level_rejects(bad):
    with pytest.raises(ValueError, match="range"):
        scale.check_level(bad)


# --------------------------------------------------------------------------------------------
# Scale strings (the CLI's --scale)


@pytest.mark.parametrize(
    "text,value",
    [("1:25,000", 25000.0), ("1:25000", 25000.0), ("1/25000", 25000.0), ("25000", 25000.0),
     (" 1 : 5 000 ", 5000.0), ("1:1e4", 10000.0), ("1:2_500", 2500.0), ("1:0.5", 0.5)],
)
def test_parse_scale(text, value):
    assert scale.parse_scale(text) == value


@pytest.mark.parametrize("text", ["2:25000", "1:0", "1:-5", "abc", "", "1:", "1:nan", "1:inf",
                                  "1:2:3", "0", "-25000", "1:25000m"])
def test_parse_scale_rejects(text):
    with pytest.raises(ValueError, match="1:N"):
        scale.parse_scale(text)


def _cli_args(*extra):
    from engine.cli import build_parser

    return build_parser().parse_args(
        ["generate", "--bbox", "0,0,1,1", "--crs", "EPSG:4326", "--prompt", "x",
         "--out", "o.tif", *extra]
    )


def test_cli_parses_scale_string():
    assert _cli_args("--scale", "1:25,000").scale == 25000.0
    assert _cli_args("--scale", "1/5000").scale == 5000.0


def test_cli_rejects_bad_scale(capsys):
    with pytest.raises(SystemExit) as exc:
        _cli_args("--scale", "2:5000")
    assert exc.value.code != 0
    assert "1:N" in capsys.readouterr().err
