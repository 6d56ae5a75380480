"""Before / after on the map: a vertical line the user drags across the canvas; left of it
the layers under a result (the map without it), right of it the map as it is.

The canvas keeps drawing everything, result included; a canvas item paints, over the left
part only, the same map rendered without the result (QGIS's own map renderer, the canvas's
settings). So layer order, styles and the layers above the result stay as the user set them,
the layer tree is never touched, and ending the swipe only removes the item. Reached from a
raster layer's context menu ("Swipe…"). The line's geometry is core/swipe.py.
"""

from __future__ import annotations

from qgis.core import QgsMapRendererParallelJob, QgsMapSettings, QgsProject
from qgis.gui import QgsMapCanvasItem, QgsMapTool
from qgis.PyQt.QtCore import QPoint, QPointF, QRectF, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QCursor, QPen

try:  # Qt6 (QGIS 4) has QAction in QtGui; Qt5 in QtWidgets
    from qgis.PyQt.QtGui import QAction
except ImportError:
    from qgis.PyQt.QtWidgets import QAction

from .core import swipe
from .qgis_compat import raster_layer_type

ACTION_TEXT = "Swipe: compare with the layers under it (Text2Earth)"
LINE_COLOUR = QColor(255, 255, 255)
LINE_SHADOW = QColor(0, 0, 0, 160)


class BeforeItem(QgsMapCanvasItem):
    """The map without the result, painted left of the swipe line only."""

    def __init__(self, canvas, tool: SwipeTool) -> None:
        super().__init__(canvas)
        self.canvas = canvas
        self.tool = tool
        self.image = None  # the last finished render, and where it lies (its map rect)
        self.job: QgsMapRendererParallelJob | None = None
        self.setZValue(-1)  # under rubber bands and other tools' items
        canvas.mapCanvasRefreshed.connect(self.render)

    def render(self) -> None:
        """Render the canvas's layers without the result, in the background."""
        if self.job is not None:
            self.job.finished.disconnect(self._rendered)
            self.job.cancelWithoutBlocking()
        settings = QgsMapSettings(self.canvas.mapSettings())
        settings.setLayers([layer for layer in self.canvas.layers()
                            if layer.id() != self.tool.layer_id])
        self.job = QgsMapRendererParallelJob(settings)
        self.job.finished.connect(self._rendered)
        self.job.start()

    def _rendered(self) -> None:
        job, self.job = self.job, None
        self.image = job.renderedImage()
        self.setRect(job.mapSettings().visibleExtent())
        self.update()

    def _local(self, x: int, y: int) -> QPointF:
        """A point of the canvas widget in this item's coordinates."""
        return self.mapFromScene(self.canvas.mapToScene(QPoint(x, y)))

    def paint(self, painter, option=None, widget=None) -> None:  # QGraphicsItem's
        if self.image is None:
            return
        width, height = self.canvas.width(), self.canvas.height()
        clip = swipe.before_rect(self.tool.fraction, width, height)
        top_left = self._local(clip.x, clip.y)
        bottom_right = self._local(clip.x + clip.width, clip.y + clip.height)
        bounds = self.boundingRect()
        painter.save()
        if not clip.empty:
            painter.setClipRect(QRectF(top_left, bottom_right))
            painter.drawImage(bounds, self.image)
        painter.restore()
        line = self._local(swipe.line_x(self.tool.fraction, width), 0)
        bottom = self._local(0, height).y()
        for colour, pen_width in ((LINE_SHADOW, 4), (LINE_COLOUR, 2)):
            painter.setPen(QPen(colour, pen_width))
            painter.drawLine(QPointF(line.x(), line.y()), QPointF(line.x(), bottom))

    def stop(self) -> None:
        try:
            self.canvas.mapCanvasRefreshed.disconnect(self.render)
        except (TypeError, RuntimeError):
            pass
        if self.job is not None:
            self.job.finished.disconnect(self._rendered)
            self.job.cancel()
            self.job = None
        self.canvas.scene().removeItem(self)


class SwipeTool(QgsMapTool):
    """Drag the line (or press anywhere to bring it there); Esc ends the swipe and gives the
    canvas back to the tool it had."""

    ended = pyqtSignal()

    def __init__(self, canvas, layer, previous_tool=None) -> None:
        super().__init__(canvas)
        self.layer_id = layer.id()
        self.fraction = 0.5
        self.previous_tool = previous_tool
        self.item: BeforeItem | None = None
        self._press: tuple[float, float] | None = None  # (x, fraction) where a drag began
        self.setCursor(QCursor(Qt.CursorShape.SplitHCursor))
        QgsProject.instance().layerWillBeRemoved.connect(self._layer_removed)

    def activate(self) -> None:
        super().activate()
        if self.item is None:
            self.item = BeforeItem(self.canvas(), self)
            self.item.render()

    def deactivate(self) -> None:
        if self.item is not None:
            self.item.stop()
            self.item = None
        try:
            QgsProject.instance().layerWillBeRemoved.disconnect(self._layer_removed)
        except (TypeError, RuntimeError):
            pass
        super().deactivate()
        self.ended.emit()

    def set_fraction(self, fraction: float) -> None:
        self.fraction = swipe.clamp_fraction(fraction)
        if self.item is not None:
            self.item.update()

    def canvasPressEvent(self, event) -> None:  # noqa: N802 - QGIS's name
        x = event.pixelPoint().x()
        self._press = (x, self.fraction)
        self.set_fraction(swipe.drag(self.fraction, x, x, self.canvas().width()))

    def canvasMoveEvent(self, event) -> None:  # noqa: N802 - QGIS's name
        if self._press is None:
            return
        press_x, fraction = self._press
        self.set_fraction(swipe.drag(fraction, press_x, event.pixelPoint().x(),
                                     self.canvas().width()))

    def canvasReleaseEvent(self, event) -> None:  # noqa: N802 - QGIS's name
        self._press = None

    def keyPressEvent(self, event) -> None:  # noqa: N802 - QGIS's name
        if event.key() == Qt.Key.Key_Escape:
            self.stop()

    def stop(self) -> None:
        canvas = self.canvas()
        if canvas.mapTool() is not self:
            return
        try:
            if self.previous_tool is not None:
                canvas.setMapTool(self.previous_tool)
                return
        except RuntimeError:  # that tool was deleted meanwhile (its plugin unloaded)
            pass
        canvas.unsetMapTool(self)

    def _layer_removed(self, layer_id: str) -> None:
        if layer_id == self.layer_id:
            self.stop()


class SwipeAction:
    """'Swipe…' in every raster layer's context menu; one swipe at a time."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.tool: SwipeTool | None = None
        self.action = QAction(ACTION_TEXT, iface.mainWindow())
        self.action.setToolTip("drag a line across the map: the layers under this one on its "
                               "left, this layer on its right; Esc to stop")
        self.action.triggered.connect(lambda *args: self.start())
        iface.addCustomActionForLayerType(self.action, "", raster_layer_type(), True)

    def start(self, layer=None) -> SwipeTool | None:
        layer = layer if layer is not None else self.iface.activeLayer()
        if layer is None or layer.type() != raster_layer_type():
            return None
        canvas = self.iface.mapCanvas()
        self.end()
        previous = canvas.mapTool()
        self.tool = SwipeTool(canvas, layer, previous)
        canvas.setMapTool(self.tool)
        self.iface.messageBar().pushInfo(
            "Swipe", f"left of the line: the map without {layer.name()}; drag the line, "
                     "Esc to stop")
        return self.tool

    def end(self) -> None:
        if self.tool is not None:
            self.tool.stop()
            self.tool = None

    def unload(self) -> None:
        self.end()
        self.iface.removeCustomActionForLayerType(self.action)
        self.action.deleteLater()
