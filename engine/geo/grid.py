"""Extent + CRS + level -> the output pixel grid, and the model canvas around it.

Every CRS question goes to pyproj. The grid is in the extent's own CRS (or ``out_crs``), its
bounds are the requested extent, and its pixels are square on the ground at the centre; where
the CRS stretches them away from the centre by more than a few percent, the grid's notes say
so. Latitudes and longitudes are always degrees from Greenwich (engine.geo.lonlat), whatever
the CRS's own angular unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from pyproj import CRS, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from pyproj.exceptions import CRSError, ProjError

from engine.errors import InputError
from engine.geo.lonlat import LonLat, degrees_per_unit, wrap_longitude
from text2earth_qgis.core.contract import scale
from text2earth_qgis.core.contract.scale import LevelChoice

MODEL_TILE = 256  # the training size: smaller canvases come out smeared
VAE_FACTOR = 8
DEFAULT_MAX_PIXELS = 25000 * 25000  # beyond this a request is taken for a mistake
SQUARE_TOLERANCE = 0.03  # pixels more than 3 % off square at an edge of the extent: a note


@dataclass(frozen=True)
class LevelRequest:
    """How the user asked for a resolution: at most one of level, resolution or scale."""

    level: int | None = None
    resolution: float | None = None  # metres per pixel on the ground
    scale_denominator: float | None = None  # N of a 1:N map scale
    dpi: float = scale.DEFAULT_DPI
    auto_size: int = 512  # with nothing given: the extent's long side at about this many px

    def __post_init__(self) -> None:
        given = [v for v in (self.level, self.resolution, self.scale_denominator) if v is not None]
        if len(given) > 1:
            raise InputError("give only one of level, resolution or scale")


@dataclass(frozen=True)
class OutputGrid:
    crs: CRS
    transform: Affine
    width: int
    height: int
    level_choice: LevelChoice
    ground_resolution: float  # metres per level pixel on the ground at the centre
    centre_lonlat: tuple[float, float]
    canvas_width: int
    canvas_height: int
    notes: tuple[str, ...] = ()  # warnings for the user (pixels far from square at the edges)

    @property
    def level(self) -> int:
        return self.level_choice.level

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        left, top = self.transform * (0, 0)
        right, bottom = self.transform * (self.width, self.height)
        return left, bottom, right, top

    @property
    def canvas_offset(self) -> tuple[int, int]:
        """(col, row) of the output's top-left pixel inside the model canvas."""
        return (self.canvas_width - self.width) // 2, (self.canvas_height - self.height) // 2

    @property
    def canvas_transform(self) -> Affine:
        col, row = self.canvas_offset
        return self.transform * Affine.translation(-col, -row)


def parse_crs(text: str | int | CRS) -> CRS:
    """EPSG code ('EPSG:32632', 32632), WKT or PROJ string -> CRS, or one clear error."""
    if isinstance(text, CRS):
        return text
    if isinstance(text, str) and not text.strip():
        raise InputError("no CRS given: use an EPSG code (EPSG:4326), WKT or a PROJ string")
    try:
        crs = CRS.from_user_input(text)
    except CRSError as exc:
        raise InputError(f"unknown CRS {str(text)[:80]!r}: {exc}") from None
    if not (crs.is_projected or crs.is_geographic):
        raise InputError(f"CRS {crs.name!r} is neither projected nor geographic (2D)")
    return crs


def utm_crs_for(lon: float, lat: float) -> CRS:
    lon = wrap_longitude(lon)
    infos = query_utm_crs_info(
        datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat)
    )
    if not infos:
        raise InputError(f"no UTM zone covers lon {lon:.4f}, lat {lat:.4f}")
    return CRS.from_epsg(int(infos[0].code))


def is_web_mercator(crs: CRS) -> bool:
    """Google's own grid: a level pixel is an exact number of CRS units at every latitude."""
    if crs.to_epsg() in (3857, 900913, 3785, 102100, 102113):
        return True
    op = crs.coordinate_operation
    return bool(
        crs.is_projected
        and op is not None
        and "pseudo mercator" in op.method_name.lower()
        and crs.ellipsoid is not None
        and abs(crs.ellipsoid.semi_major_metre - 6378137.0) < 1e-6
        and crs.axis_info[0].unit_conversion_factor == 1.0
    )


EXTENT_NAMES = ("xmin", "ymin", "xmax", "ymax")


def check_extent_numbers(bbox) -> tuple[float, float, float, float]:
    """Four finite numbers with xmin < xmax and ymin < ymax, whatever the CRS; else one line
    saying which number is wrong and how (NaN, infinite, equal, swapped)."""
    values = _finite_extent(bbox)
    _check_order("x", values[0], values[2])
    _check_order("y", values[1], values[3])
    return values


def _finite_extent(bbox) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InputError(f"extent must be four numbers xmin,ymin,xmax,ymax, got {bbox!r}") from None
    if len(values) != 4:
        raise InputError(f"extent must be four numbers xmin,ymin,xmax,ymax, got {len(values)}: "
                         f"{bbox!r}")
    for name, value in zip(EXTENT_NAMES, values, strict=True):
        if math.isnan(value):
            raise InputError(f"the extent's {name} is not a number (NaN): give four finite "
                             "numbers xmin,ymin,xmax,ymax")
        if math.isinf(value):
            raise InputError(f"the extent's {name} is infinite ({value}): give four finite "
                             "numbers xmin,ymin,xmax,ymax")
    return values  # type: ignore[return-value]


def _check_order(axis: str, low: float, high: float) -> None:
    if low == high:
        size = "width" if axis == "x" else "height"
        raise InputError(f"the extent has zero area: its {size} is 0 ({axis}min = {axis}max "
                         f"= {low:g}); give two different {axis} values")
    if low > high:
        raise InputError(f"the extent is inverted: {axis}min {low:g} is greater than "
                         f"{axis}max {high:g}; swap them (the order is xmin,ymin,xmax,ymax)")


def _check_bbox(bbox, crs: CRS) -> tuple[float, float, float, float]:
    xmin, ymin, xmax, ymax = _finite_extent(bbox)
    if crs.is_geographic:  # limits in the CRS's own unit: 180 degrees is 200 grads
        lon_deg, lat_deg = degrees_per_unit(crs)
        west, east = xmin * lon_deg, xmax * lon_deg
        if max(abs(west), abs(east)) > 360:
            raise InputError(
                f"longitudes {west:g}..{east:g} degrees are far outside -180..180: are these "
                f"projected coordinates? then give their CRS instead of {crs.name}")
        if ymin * lat_deg < -90 or ymax * lat_deg > 90:
            raise InputError(f"latitudes {ymin * lat_deg:g}..{ymax * lat_deg:g} degrees are "
                             "outside -90..90")
        if west > east and west - east < 180 and west <= 180 and east >= -180:
            raise InputError(
                f"the extent is inverted: xmin {xmin:g} is east of xmax {xmax:g}; swap them "
                "(or, for an extent across the antimeridian, split it in two)")
        if west > east or east > 180 or west < -180:
            raise InputError(
                "the extent crosses the antimeridian (180 degrees): split it in two, "
                "or give it in a projected CRS that is continuous there"
            )
    check_extent_numbers((xmin, ymin, xmax, ymax))
    if crs.is_projected:
        _check_projected_domain((xmin, ymin, xmax, ymax), crs)
    return xmin, ymin, xmax, ymax


def _check_projected_domain(bbox: tuple[float, float, float, float], crs: CRS) -> None:
    """Refuse extents a projection wraps (Web Mercator past +/-180 degrees) or cannot invert.

    Points along the boundary go to lon/lat and back: where the CRS is defined they return
    where they were; past the antimeridian of a projection that is not continuous there
    they come back on the other side of the world.
    """
    xmin, ymin, xmax, ymax = bbox
    n = 21
    xs = [xmin + (xmax - xmin) * i / (n - 1) for i in range(n)]
    ys = [ymin + (ymax - ymin) * i / (n - 1) for i in range(n)]
    px = xs + xs + [xmin] * n + [xmax] * n
    py = [ymin] * n + [ymax] * n + ys + ys
    to_geo = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    from_geo = Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
    lon, lat = to_geo.transform(px, py, errcheck=False)
    bx, by = from_geo.transform(lon, lat, errcheck=False)
    tolerance = 1e-6 * max(xmax - xmin, ymax - ymin) + 1e-6 * max(map(abs, bbox))
    for x0, y0, x1, y1 in zip(px, py, bx, by, strict=True):
        if not (math.isfinite(x1) and math.isfinite(y1)) or (
            abs(x1 - x0) > tolerance or abs(y1 - y0) > tolerance
        ):
            raise InputError(
                f"the extent crosses the antimeridian or leaves the area where {crs.name} is "
                "defined: split it, or give it in a CRS that is continuous there"
            )


def _transform_bounds(bbox, src: CRS, dst: CRS) -> tuple[float, float, float, float]:
    try:
        tr = Transformer.from_crs(src, dst, always_xy=True)
        out = tr.transform_bounds(*bbox, densify_pts=21)
    except ProjError as exc:
        raise InputError(f"cannot transform the extent to {dst.name}: {exc}") from None
    if not all(math.isfinite(v) for v in out):
        raise InputError(f"the extent lies outside the area where {dst.name} is defined")
    if dst.is_geographic and out[0] > out[2]:
        raise InputError("in the output CRS the extent crosses the antimeridian: split it in two")
    return out


AREA_OF_USE_MARGIN_DEG = 15.0  # projections work a little beyond their area; x/y swaps don't


def _check_area_of_use(crs: CRS, lon: float, lat: float) -> None:
    """Catch swapped x and y (and other wrong numbers) in a projected CRS: the extent's
    centre lands far outside the region the CRS is made for."""
    area = crs.area_of_use
    if area is None or crs.is_geographic:
        return
    west, south, east, north = area.bounds
    width = (east - west) % 360.0 or 360.0  # an area may itself cross the antimeridian
    # Longitudes wrap: measured eastwards from the area's west edge, -180..180 off its middle
    east_of_west = (lon - west - width / 2 + 180.0) % 360.0 - 180.0 + width / 2
    m = AREA_OF_USE_MARGIN_DEG
    if not (-m <= east_of_west <= width + m and south - m <= lat <= north + m):
        raise InputError(
            f"the extent's centre (lon {wrap_longitude(lon):.2f}, lat {lat:.2f}) is far outside "
            f"where {crs.name} is used (lon {west:.0f}..{east:.0f}, lat {south:.0f}..{north:.0f}): "
            "are x and y swapped, or is the CRS wrong?"
        )


def _ground_metres_per_unit(crs: CRS, x: float, y: float, step_x: float, step_y: float):
    """Metres on the ellipsoid per CRS unit along the grid's x and y axes at (x, y)."""
    lonlat = LonLat(crs)
    gx = lonlat.distance(x - step_x / 2, y, x + step_x / 2, y) / step_x
    gy = lonlat.distance(x, y - step_y / 2, x, y + step_y / 2) / step_y
    if not (math.isfinite(gx) and math.isfinite(gy) and gx > 0 and gy > 0):
        raise InputError(f"{crs.name} is not usable at the extent's centre (no ground scale)")
    return gx, gy


def check_latitudes(lonlat: LonLat, bbox: tuple[float, float, float, float]) -> None:
    """Google's levels end at Web Mercator's limit: every part of the extent must be inside,
    not only its centre (an extent in EPSG:3857 may reach past y = 20037508)."""
    check_latitudes_range(*lonlat.latitude_range(bbox))


def check_latitudes_range(south: float, north: float) -> None:
    for edge, lat in (("north", north), ("south", south)):
        try:
            scale.check_latitude(lat)
        except ValueError as exc:
            raise InputError(f"the extent's {edge} edge: {exc}") from None


def _squareness_note(crs: CRS, transform: Affine, width: int, height: int) -> str | None:
    """A warning when pixels at the extent's edges are more than SQUARE_TOLERANCE off square
    on the ground (a lon/lat grid over many degrees of latitude, a projection far from where
    it is conformal); None when they are square enough everywhere."""
    px, py = transform.a, -transform.e
    aspects = {}
    for name, col, row in (("north edge", width / 2, 0), ("south edge", width / 2, height),
                           ("west edge", 0, height / 2), ("east edge", width, height / 2),
                           ("north-west corner", 0, 0), ("north-east corner", width, 0),
                           ("south-west corner", 0, height), ("south-east corner", width, height)):
        x, y = transform * (col, row)
        try:
            gx, gy = _ground_metres_per_unit(crs, x, y, px, py)
        except InputError:
            continue
        aspects[name] = (px * gx) / (py * gy)
    if not aspects:
        return None
    wide = max(aspects, key=lambda k: round(aspects[k], 3))  # ties: an edge, not a corner
    narrow = min(aspects, key=lambda k: round(aspects[k], 3))
    if max(abs(math.log(aspects[wide])), abs(math.log(aspects[narrow]))) <= math.log1p(
            SQUARE_TOLERANCE):
        return None
    return (
        f"pixels are square on the ground only near the extent's centre in {crs.name}: "
        f"width:height is {aspects[wide]:.2f}:1 at the {wide} and "
        f"{aspects[narrow]:.2f}:1 at the {narrow}; for square pixels everywhere use "
        "--out-crs utm or a local conformal projection"
    )


def choose_level(request: LevelRequest, latitude: float, extent_long_side_m: float) -> LevelChoice:
    try:
        if request.level is not None:
            level = scale.check_level(request.level)
            return LevelChoice(level, float(level), False, "given")
        if request.resolution is not None:
            return scale.level_for_resolution(request.resolution, latitude)
        if request.scale_denominator is not None:
            return scale.level_for_scale(request.scale_denominator, latitude, request.dpi)
        choice = scale.level_for_extent(extent_long_side_m, request.auto_size, latitude)
        return LevelChoice(
            choice.level,
            choice.exact_level,
            choice.clamped,
            f"auto: extent's long side at about {request.auto_size} px",
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _canvas_side(n: int) -> int:
    return max(MODEL_TILE, -(-n // VAE_FACTOR) * VAE_FACTOR)


def build_grid(
    bbox: tuple[float, float, float, float],
    crs: str | int | CRS,
    request: LevelRequest = LevelRequest(),
    out_crs: str | int | CRS | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> OutputGrid:
    """The output grid for an extent; raises InputError with one clear line for a bad request."""
    src = parse_crs(crs)
    bbox = _check_bbox(bbox, src)

    if out_crs is None:
        dst = src
    elif isinstance(out_crs, str) and out_crs.strip().lower() == "utm":
        cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
        dst = utm_crs_for(*LonLat(src)(cx, cy))
    else:
        dst = parse_crs(out_crs)
    if not dst.equals(src):
        bbox = _transform_bounds(bbox, src, dst)
    xmin, ymin, xmax, ymax = bbox
    width_units, height_units = xmax - xmin, ymax - ymin
    cx, cy = xmin + width_units / 2, ymin + height_units / 2

    lonlat = LonLat(dst)
    lon, lat = lonlat(cx, cy)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise InputError(f"the extent's centre is outside the area where {dst.name} is defined")
    try:
        scale.check_latitude(lat)
    except ValueError as exc:
        raise InputError(f"the extent's centre: {exc}") from None
    _check_area_of_use(dst, lon, lat)
    check_latitudes(lonlat, bbox)

    gx, gy = _ground_metres_per_unit(dst, cx, cy, width_units * 1e-3, height_units * 1e-3)
    long_side_m = max(width_units * gx, height_units * gy)
    choice = choose_level(request, lat, long_side_m)
    ground = scale.ground_resolution(choice.level, lat)

    if is_web_mercator(dst):
        px = py = scale.mercator_resolution(choice.level)
    else:
        px, py = ground / gx, ground / gy

    cols, rows = width_units / px, height_units / py
    if cols < 0.5 or rows < 0.5:
        raise InputError(
            f"the extent ({width_units * gx:.3g} x {height_units * gy:.3g} m) is smaller than one "
            f"level-{choice.level} pixel ({ground:.3g} m): choose a finer level or a larger extent"
        )
    # Checked on the counts the grid will have, so the limit is neither exceeded by rounding
    # up nor refused at exactly the limit by float error.
    if cols * rows > 4 * max_pixels:  # absurd: no need to round astronomically large numbers
        width = height = max_pixels + 1
    else:
        width, height = max(1, round(cols)), max(1, round(rows))
    if width * height > max_pixels:
        raise InputError(
            f"the extent needs {cols:,.0f} x {rows:,.0f} px at level {choice.level} "
            f"({ground:.3g} m/px), more than the limit of {max_pixels:,} px: choose a coarser "
            "level or a smaller extent, or raise max pixels"
        )
    # Snap the pixel size so the bounds are exactly the extent; the stretch is < 1/(2n).
    transform = Affine(width_units / width, 0.0, xmin, 0.0, -height_units / height, ymax)
    note = None if is_web_mercator(dst) else _squareness_note(dst, transform, width, height)
    return OutputGrid(
        crs=dst,
        transform=transform,
        width=width,
        height=height,
        level_choice=choice,
        ground_resolution=ground,
        centre_lonlat=(lon, lat),
        canvas_width=_canvas_side(width),
        canvas_height=_canvas_side(height),
        notes=(note,) if note else (),
    )
