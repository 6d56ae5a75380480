"""Longitude and latitude in degrees east of Greenwich and north, on a CRS's own ellipsoid.

pyproj's transform to ``crs.geodetic_crs`` answers in that CRS's own angular unit and from its
own prime meridian: NTF (Paris) (EPSG:4807), and every projection on it such as Lambert zone II
(EPSG:27572), is in grads from Paris. cos(latitude), pyproj.Geod, Google's levels, UTM zones
and areas of use all want degrees from Greenwich: this is the one place that converts.
The ellipsoid stays the CRS's own (no datum shift), so ``geod`` measures on the same surface.
"""

from __future__ import annotations

import math

import numpy as np
from pyproj import CRS, Geod, Transformer

RADIANS_PER_DEGREE = math.pi / 180.0


def _degrees_per_unit(crs: CRS, directions: tuple[str, ...]) -> float:
    for axis in crs.axis_info:
        if axis.direction.lower() in directions:
            return axis.unit_conversion_factor / RADIANS_PER_DEGREE
    return 1.0  # pyproj always gives a geodetic CRS two angular axes; degrees if not


def degrees_per_unit(crs: CRS) -> tuple[float, float]:
    """Degrees per unit of a geographic CRS's longitude and latitude (grads: 0.9)."""
    return (_degrees_per_unit(crs, ("east", "west")), _degrees_per_unit(crs, ("north", "south")))


def wrap_longitude(lon: float) -> float:
    """Into -180..180 (180 stays 180)."""
    return lon if -180.0 <= lon <= 180.0 else (lon + 180.0) % 360.0 - 180.0


class LonLat:
    """``LonLat(crs)(x, y)`` -> (longitude, latitude) in degrees (east of Greenwich, north);
    scalars or sequences, like pyproj. Points a projection cannot invert come back inf."""

    def __init__(self, crs: CRS) -> None:
        self.crs = crs
        self.geodetic = crs.geodetic_crs
        self.geod: Geod = crs.get_geod()
        self._to = Transformer.from_crs(crs, self.geodetic, always_xy=True)
        self.lon_factor, self.lat_factor = degrees_per_unit(self.geodetic)
        pm = self.geodetic.prime_meridian
        self.prime_meridian = pm.longitude * pm.unit_conversion_factor / RADIANS_PER_DEGREE

    def __call__(self, x, y):
        lon, lat = self._to.transform(x, y, errcheck=False)
        if np.ndim(lon) == 0:
            return (float(lon) * self.lon_factor + self.prime_meridian,
                    float(lat) * self.lat_factor)
        return (list(np.asarray(lon, float) * self.lon_factor + self.prime_meridian),
                list(np.asarray(lat, float) * self.lat_factor))

    def latitude_range(self, bbox: tuple[float, float, float, float]) -> tuple[float, float]:
        """Southernmost and northernmost latitude of an extent in ``crs``: its densified edges,
        and a pole inside it (PROJ's transform_bounds checks both)."""
        _, south, _, north = self._to.transform_bounds(*bbox, densify_pts=21, errcheck=False)
        return south * self.lat_factor, north * self.lat_factor

    def distance(self, x0: float, y0: float, x1: float, y1: float) -> float:
        """Metres on the CRS's ellipsoid between two points in ``crs``."""
        lon0, lat0 = self(x0, y0)
        lon1, lat1 = self(x1, y1)
        return self.geod.inv(lon0, lat0, lon1, lat1)[2]
