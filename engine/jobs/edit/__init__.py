"""Edit and extend existing rasters: regenerate what lies inside polygons, or grow the raster
past an edge, with the inpainting model; everything else keeps its exact values.

The output is a new GeoTIFF on the source's own grid (extend: the same grid, grown) with its
CRS, transform, band count, data type, colour interpretation, nodata, tags and (lossless)
compression. The source is only ever opened for reading.

request (what is asked) -> plan (every check, before the model loads) -> run (windows through
the model) -> output (the file); source_pixels reads the source's part of a grid rect.
"""

from engine.geo.raster_source import open_source
from engine.jobs.edit.plan import parse_distance, plan_edit, plan_extend
from engine.jobs.edit.request import EditRequest, ExtendRequest, RasterPlan, RasterResult
from engine.jobs.edit.run import edit_raster, extend_raster

__all__ = ["EditRequest", "ExtendRequest", "RasterPlan", "RasterResult", "edit_raster",
           "extend_raster", "open_source", "parse_distance", "plan_edit", "plan_extend"]
