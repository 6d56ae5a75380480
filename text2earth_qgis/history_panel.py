"""The dock's History tab: this project's runs (thumbnail, prompt, seed, level, time) with
Reuse settings and Zoom to. The entries live in the project file (core/history.py)."""

from __future__ import annotations

import base64

from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRectangle
from qgis.PyQt.QtCore import QSize, pyqtSignal
from qgis.PyQt.QtGui import QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .core import history as history_store

HISTORY_SCOPE, HISTORY_KEY = "text2earth", "history"


class HistoryPanel(QWidget):
    reuse_requested = pyqtSignal(dict)

    def __init__(self, canvas) -> None:
        super().__init__()
        self.canvas = canvas
        self.history: list[history_store.HistoryEntry] = []
        layout = QVBoxLayout(self)
        self.history_list = QListWidget()
        self.history_list.setIconSize(QSize(64, 64))
        buttons = QHBoxLayout()
        self.reuse_button = QPushButton("Reuse settings")
        self.reuse_button.clicked.connect(self.reuse_selected)
        self.zoom_button = QPushButton("Zoom to")
        self.zoom_button.clicked.connect(self.zoom_to_selected)
        self.remove_button = QPushButton("Remove from map")
        self.remove_button.setToolTip(
            "keep the variations you like: the selected runs' layers leave the project (their "
            "files stay in the output folder)")
        self.remove_button.clicked.connect(self.remove_selected_layers)
        buttons.addWidget(self.reuse_button)
        buttons.addWidget(self.zoom_button)
        buttons.addWidget(self.remove_button)
        self.history_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        layout.addWidget(self.history_list, 1)
        layout.addLayout(buttons)
        QgsProject.instance().readProject.connect(self.load)
        QgsProject.instance().cleared.connect(self.load)
        self.load()

    def add(self, job: dict, result: dict, preview: bytes = b"") -> None:
        thumb = base64.b64encode(preview).decode() if preview else ""
        self.history.append(history_store.new_entry(job, result, thumb))
        QgsProject.instance().writeEntry(HISTORY_SCOPE, HISTORY_KEY,
                                         history_store.dumps(self.history))
        self._show()

    def load(self, *args) -> None:
        text, _ = QgsProject.instance().readEntry(HISTORY_SCOPE, HISTORY_KEY, "")
        self.history = history_store.loads(text)
        self._show()

    def _show(self) -> None:
        self.history_list.clear()
        for entry in reversed(self.history):
            item = QListWidgetItem(entry.label)
            if entry.thumbnail_png_b64:
                pixmap = QPixmap()
                if pixmap.loadFromData(base64.b64decode(entry.thumbnail_png_b64), "PNG"):
                    item.setIcon(QIcon(pixmap))
            self.history_list.addItem(item)

    def selected_entry(self):
        row = self.history_list.currentRow()
        return self.history[len(self.history) - 1 - row] if row >= 0 else None

    def selected_entries(self) -> list:
        rows = sorted(index.row() for index in self.history_list.selectedIndexes())
        return [self.history[len(self.history) - 1 - row] for row in rows]

    def remove_selected_layers(self) -> int:
        """Remove the layers of the selected runs from the project; their files stay."""
        paths = {entry.path for entry in self.selected_entries() if entry.path}
        project = QgsProject.instance()
        doomed = [layer.id() for layer in project.mapLayers().values()
                  if layer.source().split("|")[0] in paths]
        project.removeMapLayers(doomed)
        return len(doomed)

    def reuse_selected(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            self.reuse_requested.emit(entry.job)

    def zoom_to_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None or len(entry.bbox) != 4:
            return
        crs = QgsCoordinateReferenceSystem(entry.crs)
        transform = QgsCoordinateTransform(crs, self.canvas.mapSettings().destinationCrs(),
                                           QgsProject.instance())
        self.canvas.setExtent(transform.transformBoundingBox(QgsRectangle(*entry.bbox)))
        self.canvas.refresh()

    def cleanup(self) -> None:
        for signal in (QgsProject.instance().readProject, QgsProject.instance().cleared):
            try:
                signal.disconnect(self.load)
            except (TypeError, RuntimeError):
                pass
