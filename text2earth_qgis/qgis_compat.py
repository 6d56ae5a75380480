"""The few QGIS API names that moved between 3.22 and 4, resolved once, and the CRS handed
to the engine."""

from __future__ import annotations

from qgis import core as qgis_core
from qgis.core import Qgis, QgsCoordinateReferenceSystem

# Authorities pyproj (the engine) knows; QGIS's own "USER:100000" ids mean nothing there.
ENGINE_AUTHORITIES = ("EPSG", "ESRI", "IGNF", "OGC")


def _new_or_old(new_enum: str, new_member: str, old):
    enum = getattr(Qgis, new_enum, None)
    return getattr(enum, new_member) if enum is not None and hasattr(enum, new_member) else old()


def raster_layer_type():
    return _new_or_old("LayerType", "Raster", lambda: qgis_core.QgsMapLayerType.RasterLayer)


def polygon_geometry_type():
    return _new_or_old("GeometryType", "Polygon",
                       lambda: qgis_core.QgsWkbTypes.GeometryType.PolygonGeometry)


def layer_filter(kind: str):
    """'RasterLayer' or 'PolygonLayer' for QgsMapLayerComboBox.setFilters."""
    return _new_or_old("LayerFilter", kind,
                       lambda: getattr(qgis_core.QgsMapLayerProxyModel.Filter, kind))


def polygon_source_type():
    """QgsProcessingParameterFeatureSource's 'polygon layers only'."""
    return _new_or_old("ProcessingSourceType", "VectorPolygon",
                       lambda: qgis_core.QgsProcessing.SourceType.TypeVectorPolygon)


def number_type(kind: str):
    """'Double' or 'Integer' for QgsProcessingParameterNumber."""
    return _new_or_old("ProcessingNumberParameterType", kind,
                       lambda: getattr(qgis_core.QgsProcessingParameterNumber.Type, kind))


def wkt2_variant():
    return _new_or_old("CrsWktVariant", "Wkt2_2019",
                       lambda: QgsCoordinateReferenceSystem.WktVariant.WKT2_2019)


def crs_for_engine(crs: QgsCoordinateReferenceSystem) -> str:
    """An authority code pyproj knows, else the full WKT2 (custom and user CRSs)."""
    authid = crs.authid()
    if authid and authid.split(":")[0].upper() in ENGINE_AUTHORITIES:
        return authid
    return crs.toWkt(wkt2_variant())
