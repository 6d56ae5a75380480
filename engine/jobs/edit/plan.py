"""Edit and extend planning: every check and decision before the model is loaded (the
mask, the level, the model's scale, the windows, the size limit)."""

from __future__ import annotations

import math
import re
import secrets
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.windows import Window, union

from engine import __version__
from engine.errors import InputError
from engine.geo.edit_mask import burn, grow, pixel_bounds, polygon_parts, read_mask, to_raster_crs
from engine.geo.geotiff import (
    check_output_path,
)
from engine.geo.grid import check_latitudes_range
from engine.geo.lonlat import LonLat, degrees_per_unit
from engine.geo.raster_source import (
    BandMapping,
    SourceInfo,
    band_mapping,
    describe_source,
    ground_pixel_size,
    latitude_at,
    valid_pixels,
)
from engine.geo.tiling import tile_seed
from engine.geo.windows import clip, grown, is_empty, merge_windows, pixels_around, relative
from engine.jobs.edit.request import (
    MAX_EDGE_PX,
    SIDES,
    EditRequest,
    ExtendRequest,
    RasterJob,
    RasterPlan,
)
from engine.jobs.edit.source_pixels import paste_inside
from engine.jobs.generate import MAX_SEED, check_sampling
from engine.jobs.regenerate import (
    Grid,
    ModelScale,
    Pass,
    Regenerator,
    plan_pass,
)
from text2earth_qgis.core.contract import scale as scales


def _check_common(request: RasterJob) -> None:
    if not request.prompt or not request.prompt.strip():
        raise InputError("the prompt is empty: describe what to put there")
    check_sampling(request)
    if request.level is not None:
        try:
            scales.check_level(request.level)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    out, raster = Path(request.out).expanduser(), Path(request.raster).expanduser()
    if out.exists() and raster.exists() and out.resolve() == raster.resolve():
        raise InputError("the output would replace the source raster: sources are never "
                         "modified, give another output name")
    check_output_path(out, request.overwrite)


def _scale_at(request: RasterJob, info: SourceInfo, col: float, row: float,
              notes: list[str]):
    px_m = ground_pixel_size(info.crs, info.transform, col, row)
    latitude = latitude_at(info.crs, info.transform, col, row)
    try:
        if request.level is not None:
            choice = scales.LevelChoice(request.level, float(request.level), False, "given")
        else:
            choice = scales.level_for_resolution(math.sqrt(px_m[0] * px_m[1]), latitude)
            choice = scales.LevelChoice(choice.level, choice.exact_level, choice.clamped,
                                        f"auto: the raster's {choice.reason}")
        model_m = scales.ground_resolution(choice.level, latitude)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    model_scale = ModelScale.between(px_m, model_m)
    if not model_scale.identity:
        factor = math.sqrt(model_scale.sx * model_scale.sy)
        how = "upsampled" if factor > 1 else "downsampled"
        notes.append(
            f"the raster's pixels ({px_m[0]:.3g} x {px_m[1]:.3g} m) are not level "
            f"{choice.level}'s ({model_m:.3g} m here): windows are {how} {factor:.2f}x for "
            "the model and back" + ("; new pixels look softer than the source's"
                                    if factor < 0.7 else "")
        )
    if choice.clamped:
        notes.append(choice.message)
    return choice, model_m, px_m, model_scale


def _metres(m: float) -> str:
    return f"{m / 1000:.3g} km" if m >= 1000 else f"{m:.3g} m"


def _check_not_too_coarse(request: RasterJob, px_m: tuple[float, float], model_m: float,
                          model_scale: ModelScale, level: int) -> None:
    """A window's new pixels go back only into raster pixels wholly inside it, and windows
    overlap by ``overlap`` model px: a raster pixel wider than that (or than half a window)
    can never be painted. World maps of 0.7 degree pixels (78 km) at level 10 (150 m) are."""
    spans = max(model_scale.sx, model_scale.sy)
    room = min(request.overlap, request.tile / 2) if request.overlap else request.tile / 2
    if spans <= max(room, 1.0):
        return
    coarser = ("" if level <= scales.MIN_LEVEL
               else f", or choose a coarser --level than {level}")
    raise InputError(
        f"the raster's pixels ({_metres(px_m[0])} x {_metres(px_m[1])} on the ground) are too "
        f"coarse for the model: at level {level} ({_metres(model_m)} pixels) one spans "
        f"{spans:.0f} model pixels, and {request.tile} px model windows can paint raster pixels "
        f"only up to {room:g} model pixels wide; resample the raster to pixels of "
        f"{_metres(room * model_m)} or smaller first (gdalwarp -tr){coarser}"
    )


def _alpha_opaque(src, info: SourceInfo) -> float:
    if info.alpha_band is None:
        return 0.0
    dtype = np.dtype(src.dtypes[info.alpha_band - 1])
    sample = src.read(info.alpha_band, out_shape=(min(src.height, 256), min(src.width, 256)))
    top = float(sample.max())
    return top if top > 0 else float(np.iinfo(dtype).max if dtype.kind in "ui" else 1.0)


def _check_size(plan_passes: list[Pass], request: RasterJob, what: str) -> None:
    total = sum(p.plan.canvas_width * p.plan.canvas_height for p in plan_passes)
    if total > request.max_pixels:
        raise InputError(
            f"the {what} is {total / 1e6:.0f} Mpx at the model's scale, above the limit of "
            f"{request.max_pixels / 1e6:.0f} Mpx: use a smaller area or a coarser --level"
        )


def _fields(request: RasterJob, info: SourceInfo, mapping: BandMapping, level, model_m,
            px_m, model_scale: ModelScale, notes: list[str]) -> dict[str, object]:
    extra = [b for b in range(1, info.count + 1)
             if b not in mapping.bands and b != info.alpha_band]
    if extra:
        notes.append(f"band(s) {extra} are not colours: kept as they were under new pixels")
    return {
        "source": info.path.name,
        "prompt": request.prompt.strip(),
        "negative_prompt": request.negative_prompt or "",
        "level": level.level,
        "level_choice": level.message,
        "ground_resolution_m": f"{model_m:.6g}",
        "source_resolution_m": f"{px_m[0]:.6g} x {px_m[1]:.6g}",
        "model_scale": f"{model_scale.sx:.6g} x {model_scale.sy:.6g}",
        "band_mapping": mapping.describe(),
        "steps": request.steps,
        "guidance": request.guidance,
        "scheduler": request.scheduler,
        "unedited_bands": ",".join(map(str, extra)),
        "engine_version": __version__,
    }


def plan_edit(request: EditRequest, src) -> RasterPlan:
    _check_common(request)
    for name in ("dilate", "feather"):
        value = getattr(request, name)
        if not isinstance(value, int) or not 0 <= value <= MAX_EDGE_PX:
            raise InputError(f"{name} must be 0..{MAX_EDGE_PX} pixels, got {value!r}")
    info = describe_source(src, request.bands)
    geoms, mask_crs = read_mask(request.mask, request.mask_crs, request.mask_layer, info.crs)
    try:
        geoms = to_raster_crs(geoms, mask_crs, info.crs)
    except Exception as exc:  # noqa: BLE001 - GDAL's reprojection errors vary
        raise InputError(
            f"the mask cannot be brought into the raster's CRS ({exc}): is the mask's CRS "
            f"right? {mask_crs.name} was used"
            + ("" if request.mask_crs else "; GeoJSON is read as lon/lat unless a CRS is given")
        ) from None
    grid = Grid(info.width, info.height)
    c0, r0, c1, r1 = pixel_bounds(geoms, info.transform)
    if not (math.isfinite(c0 + r0 + c1 + r1)):
        raise InputError("the mask's coordinates cannot be placed on the raster")
    if c1 <= 0 or r1 <= 0 or c0 >= info.width or r0 >= info.height:
        left, bottom, right, top = src.bounds
        raise InputError(
            f"the mask lies outside the raster (the raster covers x {left:.6g}..{right:.6g}, "
            f"y {bottom:.6g}..{top:.6g} in {info.crs.name}): is the mask's CRS right"
            f"{'' if request.mask_crs else ' (give it with --mask-crs)'}?"
        )
    notes: list[str] = []
    centre = (min(max((c0 + c1) / 2, 0), info.width), min(max((r0 + r1) / 2, 0), info.height))
    level, model_m, px_m, model_scale = _scale_at(request, info, *centre, notes)
    margin = request.dilate + request.feather + 1
    context_x = request.overlap / model_scale.sx + margin
    context_y = request.overlap / model_scale.sy + margin
    boxes = []
    for part in (p for g in geoms for p in polygon_parts(g)):
        k0, q0, k1, q1 = pixel_bounds([part], info.transform)
        box = grid.clip(pixels_around(k0 - context_x, q0 - context_y, k1 + context_x,
                                      q1 + context_y))
        if not is_empty(box):
            boxes.append(box)
    gap = math.ceil(request.tile / min(model_scale.sx, model_scale.sy)) + 2
    areas = merge_windows(boxes, gap)
    mapping = band_mapping(src, info)

    def region(window: Window) -> np.ndarray:
        g = request.dilate
        wide = grown(window, g)  # the polygons burnt wider, so growing sees past the edge
        burnt = burn(geoms, info.transform * Affine.translation(wide.col_off, wide.row_off),
                     (wide.height, wide.width))
        burnt = grow(burnt, g)[relative(window, wide).toslices()]
        return burnt & _usable(src, info, grid, window, request.fill_nodata)

    seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    request.seed = seed
    # The first area keeps the job's seed: a single polygon's result does not depend on this.
    passes = [plan_pass(area, model_scale, request.tile, request.overlap, region,
                        seed if k == 0 else tile_seed(seed, k, -2))
              for k, area in enumerate(areas)]
    _check_size(passes, request, "masked area")
    _check_not_too_coarse(request, px_m, model_m, model_scale, level.level)
    regen = regenerator(grid, model_scale, mapping, request.feather, info, 0.0)
    groups, count = [], 0
    for p in passes:  # far-apart areas: windows never overlap, each its own scratch area
        inners = _inner_windows(regen, [p])
        if inners:
            groups.append((_union(inners, grid), [p]))
            count += len(inners)
    if not count:
        raise InputError(
            "the mask covers only nodata or transparent pixels of the raster: nothing to "
            "regenerate (allow filling nodata to generate into them)"
        )
    fields = _fields(request, info, mapping, level, model_m, px_m, model_scale, notes)
    fields.update(edit="regenerated inside polygons", mask_dilate_px=request.dilate,
                  mask_feather_px=request.feather, fill_nodata=request.fill_nodata,
                  windows=count, areas=len(groups))
    return RasterPlan(info, mapping, level, model_m, px_m, model_scale, grid, info.transform,
                      (0, 0), groups, count, notes, _alpha_opaque(src, info), fields)


def _usable(src, info: SourceInfo, grid: Grid, window: Window,
            fill_nodata: bool) -> np.ndarray:
    """1 where a pixel may be regenerated: inside the grid, and holding data unless nodata is
    to be filled too."""

    def read(window: Window) -> np.ndarray | int:
        if fill_nodata:
            return 1  # every pixel inside the grid
        return valid_pixels(src, window, info.rgb_bands, boundless=False)

    return paste_inside(np.zeros((window.height, window.width), np.uint8), window, (0, 0),
                        (grid.width, grid.height), read)


def _inner_windows(regen: Regenerator, passes: list[Pass]) -> list[Window]:
    """The grid px each window of the passes reads. Only these are kept: a window's masks
    and weights (some 600 kB at 256 px) are dropped as soon as the next one is made, so
    planning a 20000 px raster's 11000 windows holds no more than one window's."""
    return [work.inner for p in passes for work in regen.windows(p)]


def _union(windows: list[Window], grid: Grid) -> Window:
    return grid.clip(union(*windows))


def regenerator(grid, model_scale, mapping, feather, info, alpha_opaque, store=None,
                 origin=(0, 0), source_mask=None, written=None) -> Regenerator:
    return Regenerator(grid, model_scale, mapping, feather, store, origin, info.nodata,
                       info.alpha_band, alpha_opaque, source_mask, written)


DISTANCE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(m|km|px)?\s*$", re.IGNORECASE)


def parse_distance(value: str | float) -> tuple[float, str]:
    """(number, 'm' or 'px') from 500, '500m', '1.5 km' or '200px'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), "m"
    else:
        match = DISTANCE.match(str(value))
        if not match:
            raise InputError(f"expected a distance such as 500m, 1.5km or 200px, got {value!r}")
        number, unit = float(match.group(1)), (match.group(2) or "m").lower()
        if unit == "km":
            number, unit = number * 1000.0, "m"
    if not (math.isfinite(number) and number > 0):
        raise InputError(f"the distance must be more than 0, got {value!r}")
    return number, unit


def plan_extend(request: ExtendRequest, src) -> RasterPlan:
    _check_common(request)
    if request.side not in (*SIDES, "all"):
        raise InputError(f"side must be one of {', '.join(SIDES)} or all, got {request.side!r}")
    info = describe_source(src, request.bands)
    distance, unit = parse_distance(request.by)
    notes: list[str] = []
    level, model_m, px_m, model_scale = _scale_at(request, info, info.width / 2,
                                                  info.height / 2, notes)
    sides = SIDES if request.side == "all" else (request.side,)
    grow_px = {s: 0 for s in SIDES}
    for s in sides:
        along = px_m[0] if s in ("west", "east") else px_m[1]
        grow_px[s] = math.ceil(distance if unit == "px" else distance / along - 1e-9)
    width = info.width + grow_px["west"] + grow_px["east"]
    height = info.height + grow_px["north"] + grow_px["south"]
    grid = Grid(width, height)
    ox, oy = grow_px["west"], grow_px["north"]
    transform = info.transform * Affine.translation(-ox, -oy)
    _check_grown_extent(info.crs, transform, width, height, sides, grow_px)
    seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    request.seed = seed
    ctx_x = math.ceil(request.tile / 2 / model_scale.sx)
    ctx_y = math.ceil(request.tile / 2 / model_scale.sy)
    east, south = ox + info.width, oy + info.height  # the source's far edges in the grid
    strips = {  # the new pixels
        "west": Window(0, oy, ox, info.height),
        "east": Window(east, oy, width - east, info.height),
        "north": Window(0, 0, width, oy),
        "south": Window(0, south, width, height - south),
    }
    areas = {  # the new pixels and half a window of the source beside them, for context
        "west": Window(0, oy, ox + ctx_x, info.height),
        "east": Window(east - ctx_x, oy, width - east + ctx_x, info.height),
        "north": Window(0, 0, width, oy + ctx_y),
        "south": Window(0, south - ctx_y, width, height - south + ctx_y),
    }
    passes = []
    for number, s in enumerate(SIDES):
        if s in sides:
            passes.append(plan_pass(grid.clip(areas[s]), model_scale, request.tile,
                                    request.overlap, _strip_region(strips[s]),
                                    tile_seed(seed, number, -1)))
    _check_size(passes, request, "extension")
    _check_not_too_coarse(request, px_m, model_m, model_scale, level.level)
    mapping = band_mapping(src, info)
    regen = regenerator(grid, model_scale, mapping, 0, info, 0.0)
    inners = _inner_windows(regen, passes)
    windows = len(inners)
    if not inners:
        raise InputError("the extension holds no pixel the model can paint: extend by more")
    fields = _fields(request, info, mapping, level, model_m, px_m, model_scale, notes)
    fields.update(edit=f"extended {request.side} by {distance:g} {unit}",
                  extended_px=",".join(f"{s}={grow_px[s]}" for s in SIDES), windows=windows)
    # The sides share corners: one scratch area for all of them.
    return RasterPlan(info, mapping, level, model_m, px_m, model_scale, grid, transform,
                      (ox, oy), [(_union(inners, grid), passes)], windows,
                      notes, _alpha_opaque(src, info), fields)


def _check_grown_extent(crs, transform: Affine, width: int, height: int,
                        sides: tuple[str, ...], grow_px: dict[str, int]) -> None:
    """The grown grid must stay where its CRS is defined: latitudes within 90 degrees (in
    the CRS's own unit), every edge point of a projected grid invertible to lon/lat."""
    how = ", ".join(f"{s} by {grow_px[s]} px" for s in sides)
    n = 9
    edge = [(width * i / (n - 1), 0) for i in range(n)] + \
        [(width * i / (n - 1), height) for i in range(n)] + \
        [(0, height * i / (n - 1)) for i in range(n)] + \
        [(width, height * i / (n - 1)) for i in range(n)]
    points = [transform * p for p in edge]
    if crs.is_geographic:
        lat_deg = degrees_per_unit(crs)[1]
        lats = [y * lat_deg for _, y in points]
        worst = max(lats, key=abs)
        if abs(worst) > 90.0 + 1e-9:
            raise InputError(
                f"extending {how} reaches latitude {worst:.4f}, past the "
                f"{'north' if worst > 0 else 'south'} pole (90 degrees): extend by less"
            )
    else:
        lon, lat = LonLat(crs)([x for x, _ in points], [y for _, y in points])
        if not all(math.isfinite(v) for v in (*lon, *lat)):
            raise InputError(
                f"extending {how} leaves the area where {crs.name} is defined: extend by less"
            )
    # Google's levels, and so the model's resolutions, end at Web Mercator's latitude limit,
    # as for generate: the new pixels may not reach past it (a source already past it is
    # judged by its own scale, not refused here).
    lonlat = LonLat(crs)
    grown = lonlat.latitude_range(_bbox(transform, 0, 0, width, height))
    source = lonlat.latitude_range(_bbox(
        transform, grow_px["west"], grow_px["north"], width - grow_px["east"],
        height - grow_px["south"]))
    south = grown[0] if grown[0] < min(source[0], 0.0) else max(grown[0], -scales.MAX_LATITUDE)
    north = grown[1] if grown[1] > max(source[1], 0.0) else min(grown[1], scales.MAX_LATITUDE)
    try:
        check_latitudes_range(south, north)
    except InputError as exc:
        raise InputError(f"extending {how} reaches too far: {exc}; extend by less") from None


def _bbox(transform: Affine, c0: int, r0: int, c1: int, r1: int) -> tuple[float, ...]:
    xs, ys = zip(*(transform * (c, r) for c in (c0, c1) for r in (r0, r1)), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def _strip_region(strip: Window):
    def region(window: Window) -> np.ndarray:
        out = np.zeros((window.height, window.width), np.uint8)
        part = clip(strip, window)
        if not is_empty(part):
            out[relative(part, window).toslices()] = 1
        return out

    return region
