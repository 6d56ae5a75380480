"""An existing raster as the model sees it: which bands are R, G, B, how their values map to
the model's 8 bits and back, which pixels hold data, and how big a pixel is on the ground.

Nothing here writes to the source: it is opened read-only and only ever read.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.enums import ColorInterp

from engine.errors import InputError
from engine.geo.lonlat import LonLat

SOURCE_CACHE_BYTES = 64 << 20  # GDAL's block cache while a source is open (rasterio: bytes)
STATS_SIDE = 1024  # the stretch is measured on a decimated read: the same for every window
STRETCH_PERCENTILES = (0.5, 99.5)
LOSSLESS = {"none", "deflate", "lzw", "zstd", "packbits", "lzma", "ccittfax3", "ccittfax4",
            "ccittrle"}


@dataclass(frozen=True)
class BandMapping:
    """Source values <-> model bytes, per R, G, B band: ``byte = (v - lo) / (hi - lo) * 255``.

    uint8 sources map 1:1. Other types are stretched between low and high percentiles of the
    whole raster, recorded in the output's tags so the mapping can be undone by anyone.
    """

    bands: tuple[int, ...]  # 1-based source bands feeding the model's R, G, B (gray: one)
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    dtype: str

    @property
    def identity(self) -> bool:
        return self.dtype == "uint8"

    def to_bytes(self, values: np.ndarray, k: int) -> np.ndarray:
        if self.identity:
            return values.astype(np.uint8)
        scaled = (values.astype(np.float64) - self.lo[k]) / (self.hi[k] - self.lo[k]) * 255.0
        return np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), 0, 255).astype(np.uint8)

    def from_bytes(self, values: np.ndarray, k: int) -> np.ndarray:
        """Model bytes back to source values, as float64 (rounded and cast by the caller)."""
        if self.identity:
            return values.astype(np.float64)
        return self.lo[k] + values.astype(np.float64) / 255.0 * (self.hi[k] - self.lo[k])

    def describe(self) -> str:
        return json.dumps({"bands": list(self.bands), "low": list(self.lo), "high": list(self.hi),
                           "formula": "byte = (value - low) / (high - low) * 255"})


@dataclass(frozen=True)
class SourceInfo:
    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS
    transform: Affine
    nodata: float | None
    colorinterp: tuple[ColorInterp, ...]
    rgb_bands: tuple[int, ...]
    alpha_band: int | None
    compression: str


@contextmanager
def open_source(path: str | Path) -> Iterator[rasterio.io.DatasetReader]:
    """The raster opened read-only, with GDAL's block cache bounded while it is open: GDAL
    keeps every block it decoded up to 5 % of the machine's memory (1.2 GB of 24), and a
    plan that looks at each window of a 20000 px raster decodes all of them."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"raster {path} does not exist (or is not a file)")
    with rasterio.Env(GDAL_CACHEMAX=SOURCE_CACHE_BYTES):
        try:
            # describe_source says "not georeferenced" in one line; rasterio's warning would
            # be a second line (a traceback-like 'warning:' before the CLI's error).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                src = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"cannot open {path} as a raster: {exc}") from None
        with src:
            yield src


def describe_source(src, bands: list[int] | None = None) -> SourceInfo:
    """Check that the raster can be edited and say which bands are the colours."""
    name = Path(src.name).name
    if src.transform == Affine.identity():
        if src.gcps[0]:
            raise InputError(
                f"{name} is georeferenced by ground control points only: warp it to a grid "
                "first (gdalwarp in.tif gridded.tif, or QGIS's Georeferencer)"
            )
        raise InputError(f"{name} has no geotransform: it is not georeferenced")
    if src.crs is None:
        raise InputError(
            f"{name} has no coordinate reference system, so neither the mask nor the model's "
            "scale can be placed on it: assign its CRS first (QGIS: Layer Properties > Source, "
            "or gdal_edit.py -a_srs EPSG:XXXX)"
        )
    interp = tuple(src.colorinterp)
    if ColorInterp.palette in interp:
        raise InputError(
            f"{name} is a paletted raster: expand it to RGB first (gdal_translate -expand rgb)"
        )
    alpha = next((i + 1 for i, c in enumerate(interp) if c == ColorInterp.alpha), None)
    rgb = tuple(bands) if bands else colour_bands(interp)
    for b in rgb:
        if not 1 <= b <= src.count:
            raise InputError(f"band {b} does not exist: {name} has {src.count} band(s)")
    if len(rgb) not in (1, 3):
        raise InputError(f"give three bands (R,G,B) or one (gray), got {list(rgb)}")
    dtype = src.dtypes[rgb[0] - 1]
    if dtype in ("complex64", "complex128", "complex_int16"):
        raise InputError(f"{name} holds complex numbers, not an image")
    return SourceInfo(Path(src.name), src.width, src.height, src.count, dtype,
                      CRS.from_wkt(src.crs.to_wkt()), src.transform, src.nodata, interp, rgb,
                      alpha, (src.compression.value.lower() if src.compression else "none"))


def colour_bands(interp: tuple[ColorInterp, ...]) -> tuple[int, ...]:
    """1-based R, G, B bands by colour interpretation (sources may be BGR, or RGB plus NIR);
    the first band alone for a one-band image; the first three when nothing says otherwise."""
    where = {c: i + 1 for i, c in enumerate(interp)}
    if all(c in where for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return where[ColorInterp.red], where[ColorInterp.green], where[ColorInterp.blue]
    data = [i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha]
    if len(data) >= 3:
        return tuple(data[:3])
    return (data[0],) if data else (1,)


def band_mapping(src, info: SourceInfo) -> BandMapping:
    if info.dtype == "uint8":
        return BandMapping(info.rgb_bands, (0.0,) * len(info.rgb_bands),
                           (255.0,) * len(info.rgb_bands), "uint8")
    factor = max(1, math.ceil(max(src.width, src.height) / STATS_SIDE))
    shape = (max(1, src.height // factor), max(1, src.width // factor))
    lo, hi = [], []
    for b in info.rgb_bands:
        sample = src.read(b, out_shape=shape, masked=True)
        values = sample.compressed()
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise InputError(f"band {b} of {info.path.name} holds no valid pixels")
        low, high = np.percentile(values.astype(np.float64), STRETCH_PERCENTILES)
        if not high > low:
            high = low + 1.0
        lo.append(float(low))
        hi.append(float(high))
    return BandMapping(info.rgb_bands, tuple(lo), tuple(hi), info.dtype)


def ground_pixel_size(crs: CRS, transform: Affine, col: float, row: float) -> tuple[float, float]:
    """Metres on the ellipsoid spanned by one pixel along the raster's rows (x) and columns
    (y) at pixel (col, row); works for rotated grids, feet, degrees and grads alike."""
    lonlat = LonLat(crs)
    centre = transform * (col, row)
    gx = lonlat.distance(*centre, *(transform * (col + 1, row)))
    gy = lonlat.distance(*centre, *(transform * (col, row + 1)))
    if not (math.isfinite(gx) and math.isfinite(gy) and gx > 0 and gy > 0):
        raise InputError(f"{crs.name} gives no ground scale at pixel ({col:.0f}, {row:.0f})")
    return gx, gy


def latitude_at(crs: CRS, transform: Affine, col: float, row: float) -> float:
    """Degrees north (whatever the CRS's own angular unit) at pixel (col, row)."""
    return LonLat(crs)(*(transform * (col, row)))[1]


def valid_pixels(src, window, bands: tuple[int, ...], boundless: bool = True) -> np.ndarray:
    """True where every colour band holds data (GDAL's masks: nodata, alpha, mask band)."""
    masks = src.read_masks(list(bands), window=window, boundless=boundless)
    return np.all(masks > 0, axis=0)


def output_compression(info: SourceInfo) -> tuple[str | None, str | None]:
    """(compression to write, why it differs from the source's or None). Lossy codecs would
    change every pixel outside the mask on re-encoding, so those become deflate."""
    if info.compression in LOSSLESS:
        return (None if info.compression == "none" else info.compression), None
    return "deflate", (
        f"the source is {info.compression.upper()}-compressed (lossy); the output uses "
        "lossless DEFLATE so pixels outside the mask keep their decoded values exactly"
    )
