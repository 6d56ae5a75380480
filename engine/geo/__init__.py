"""Geometry and rasters: grids, windows, masks, sources and GeoTIFF/COG writing."""
