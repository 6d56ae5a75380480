"""Text2Earth inference engine: prompt + extent -> georeferenced synthetic GeoTIFF."""

__version__ = "0.1.0"
