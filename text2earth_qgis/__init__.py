"""Text2Earth QGIS plugin. PyQGIS + stdlib only: the engine (torch) runs in its own process."""


def classFactory(iface):  # noqa: N802 - QGIS's required name
    from .plugin import Text2EarthPlugin

    return Text2EarthPlugin(iface)
