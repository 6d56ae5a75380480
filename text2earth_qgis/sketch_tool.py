"""A map tool to sketch the polygons of an edit mask on the canvas.

Left click adds a vertex, right click or a double click closes the polygon (three vertices at
least); several polygons may be drawn. Backspace removes the last vertex, Esc drops the
polygon being drawn, or every polygon when none is. Each polygon keeps the CRS the canvas had
when it was drawn, so a later change of the project CRS moves nothing.
"""

from __future__ import annotations

from qgis.core import QgsCoordinateReferenceSystem, QgsGeometry, QgsPointXY
from qgis.gui import QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import QPoint, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor

from .qgis_compat import polygon_geometry_type

SAME_CLICK_PX = 2  # a click this close to the previous vertex adds nothing (double clicks)


class PolygonSketchTool(QgsMapTool):
    changed = pyqtSignal()  # a vertex or polygon added or removed

    def __init__(self, canvas) -> None:
        super().__init__(canvas)
        self.polygons: list[tuple[QgsGeometry, QgsCoordinateReferenceSystem]] = []
        self.ring: list[QgsPointXY] = []
        self._last_click: QPoint | None = None
        self.done_band = self._band(QColor(220, 30, 160, 220), QColor(220, 30, 160, 50))
        self.ring_band = self._band(QColor(220, 30, 160, 160), QColor(220, 30, 160, 25))
        self.ring_band.setLineStyle(Qt.PenStyle.DashLine)
        canvas.destinationCrsChanged.connect(self._crs_changed)

    def _band(self, line: QColor, fill: QColor) -> QgsRubberBand:
        band = QgsRubberBand(self.canvas(), polygon_geometry_type())
        band.setColor(line)
        band.setFillColor(fill)
        band.setWidth(2)
        return band

    # ----- what was drawn -----------------------------------------------------------------

    def geometries(self) -> list[tuple[QgsGeometry, QgsCoordinateReferenceSystem]]:
        """The closed polygons, each with the CRS of its coordinates."""
        return [(QgsGeometry(g), QgsCoordinateReferenceSystem(c)) for g, c in self.polygons]

    def clear(self) -> None:
        self.polygons.clear()
        self.ring.clear()
        self._last_click = None
        self._redraw()
        self.changed.emit()

    # ----- mouse and keys ------------------------------------------------------------------

    def canvasReleaseEvent(self, event) -> None:  # noqa: N802 - QGIS's name
        if event.button() == Qt.MouseButton.RightButton:
            self._close()
            self._last_click = None
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        self._add_vertex(event.pos())

    def canvasDoubleClickEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            # Its first click's release usually added the vertex already; not always.
            self._add_vertex(event.pos())
            self._close()

    def _add_vertex(self, pos: QPoint) -> None:
        if self._last_click is not None and (
                (pos - self._last_click).manhattanLength() <= SAME_CLICK_PX):
            return  # the second click of a double click, or a twitch: no zero-length edge
        self._last_click = QPoint(pos)
        self.ring.append(self.toMapCoordinates(pos))
        self._redraw()
        self.changed.emit()

    def canvasMoveEvent(self, event) -> None:  # noqa: N802
        if self.ring:
            self._redraw(self.toMapCoordinates(event.pos()))

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Escape:
            if self.ring:
                self.ring.clear()
            else:
                self.polygons.clear()
        elif event.key() in (Qt.Key.Key_Backspace, Qt.Key.Key_Delete) and self.ring:
            self.ring.pop()
        else:
            event.ignore()
            return
        self._last_click = None
        self._redraw()
        self.changed.emit()

    def _close(self) -> None:
        if len(self.ring) >= 3:
            ring = [*self.ring, self.ring[0]]
            crs = self.canvas().mapSettings().destinationCrs()
            self.polygons.append((QgsGeometry.fromPolygonXY([ring]), crs))
        self.ring.clear()
        self._redraw()
        self.changed.emit()

    def _crs_changed(self) -> None:
        self.ring.clear()  # its vertices are in the old CRS; closed polygons carry theirs
        self._last_click = None
        self._redraw()

    def _redraw(self, *args) -> None:
        self.done_band.reset(polygon_geometry_type())
        for geometry, crs in self.polygons:
            self.done_band.addGeometry(geometry, crs)
        self.ring_band.reset(polygon_geometry_type())
        floating = args[0] if args and isinstance(args[0], QgsPointXY) else None
        for point in [*self.ring, *([floating] if floating else [])]:
            self.ring_band.addPoint(point)

    def cleanup(self) -> None:
        """Remove the outlines from the canvas for good (the plugin unloads)."""
        try:
            self.canvas().destinationCrsChanged.disconnect(self._crs_changed)
        except (TypeError, RuntimeError):
            pass
        for band in (self.done_band, self.ring_band):
            band.reset(polygon_geometry_type())
            self.canvas().scene().removeItem(band)
