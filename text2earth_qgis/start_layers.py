"""The Generate tab's "Start from layers" section: tick visible layers (a land-use map, an
OpenStreetMap render, a hillshade) and a strength; the generation then starts from what they
show instead of from noise. Collects input only; init_render.py draws the picture."""

from __future__ import annotations

from qgis.core import QgsProject
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSlider,
    QVBoxLayout,
)

from .core.init_image import DEFAULT_STRENGTH
from .form_layout import remembered_section

ID_ROLE = Qt.ItemDataRole.UserRole


class StartLayersSection:
    """A collapsible, checkable section: off unless ticked; remembers only if it was open."""

    def __init__(self, settings_key: str) -> None:
        self.box = remembered_section("Start from layers", settings_key)
        self.box.setCheckable(True)
        self.box.setChecked(False)
        self.box.setToolTip(
            "generate imagery that follows a map: the ticked layers are drawn for the extent "
            "as you see them, and the model starts from that picture")
        layout = QVBoxLayout()
        self.layer_list = QListWidget()
        self.layer_list.setMaximumHeight(84)
        self.layer_list.setToolTip("the project's visible layers, top first: tick the ones "
                                   "to start from")
        self.strength_slider = QSlider(Qt.Orientation.Horizontal)
        self.strength_slider.setRange(0, 100)
        self.strength_slider.setValue(round(DEFAULT_STRENGTH * 100))
        self.strength_slider.setToolTip(
            "strength: 0 keeps the layers' picture, 1 follows the prompt alone; 0.6 keeps "
            "the layout and paints imagery over it")
        self.strength_label = QLabel()
        self.strength_slider.valueChanged.connect(self._show_strength)
        self._show_strength(self.strength_slider.value())
        row = QHBoxLayout()
        row.addWidget(QLabel("Strength"))
        row.addWidget(self.strength_slider, 1)
        row.addWidget(self.strength_label)
        layout.addWidget(self.layer_list)
        layout.addLayout(row)
        self.box.setLayout(layout)
        project = QgsProject.instance()
        self._signals = [project.layersAdded, project.layersRemoved,
                         project.layerTreeRoot().visibilityChanged, project.cleared]
        for signal in self._signals:
            signal.connect(self.refresh)
        self.box.collapsedStateChanged.connect(self.refresh)
        self.refresh()

    def _show_strength(self, value: int) -> None:
        self.strength_label.setText(f"{value / 100:.2f}")

    @property
    def strength(self) -> float:
        return self.strength_slider.value() / 100

    def set_strength(self, value: float) -> None:
        self.strength_slider.setValue(round(max(0.0, min(1.0, value)) * 100))

    @property
    def active(self) -> bool:
        return self.box.isChecked()

    def refresh(self, *args) -> None:
        """The visible layers, top first, keeping the ticks the user already made."""
        ticked = set(self.ticked_ids())
        root = QgsProject.instance().layerTreeRoot()
        self.layer_list.clear()
        for layer in root.layerOrder():
            node = root.findLayer(layer.id())
            if node is None or not node.isVisible():
                continue
            item = QListWidgetItem(layer.name())
            item.setData(ID_ROLE, layer.id())
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if layer.id() in ticked
                               else Qt.CheckState.Unchecked)
            self.layer_list.addItem(item)

    def ticked_ids(self) -> list[str]:
        items = (self.layer_list.item(row) for row in range(self.layer_list.count()))
        return [item.data(ID_ROLE) for item in items
                if item.checkState() == Qt.CheckState.Checked]

    def tick(self, layer_ids) -> None:
        wanted = set(layer_ids)
        for row in range(self.layer_list.count()):
            item = self.layer_list.item(row)
            item.setCheckState(Qt.CheckState.Checked if item.data(ID_ROLE) in wanted
                               else Qt.CheckState.Unchecked)

    def ticked_layers(self) -> list:
        project = QgsProject.instance()
        return [layer for layer in map(project.mapLayer, self.ticked_ids()) if layer]

    def cleanup(self) -> None:
        for signal in self._signals:
            try:
                signal.disconnect(self.refresh)
            except (TypeError, RuntimeError):
                pass
