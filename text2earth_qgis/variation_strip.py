"""The strip of a run's variations under the Generate tab's form: thumbnails best first (the
engine's order), seed and prompt-match score; untick the ones you do not want and remove
them from the map (their files are deleted only when you also tick that)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProject
from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice, QSize, Qt
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGridLayout,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QWidget,
)

from .core.candidates import SCORE_HELP, score_text

THUMB_PX = 48
ID_ROLE, PATH_ROLE = Qt.ItemDataRole.UserRole, Qt.ItemDataRole.UserRole + 1


class VariationStrip(QWidget):
    """Hidden until a run delivers more than one variation."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 2, 0, 0)
        layout.setVerticalSpacing(2)
        self.thumbs = QListWidget()
        self.thumbs.setViewMode(QListView.ViewMode.IconMode)
        self.thumbs.setFlow(QListView.Flow.LeftToRight)
        self.thumbs.setWrapping(False)
        self.thumbs.setMovement(QListView.Movement.Static)
        self.thumbs.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.thumbs.setGridSize(QSize(THUMB_PX + 34, THUMB_PX + 22))
        self.thumbs.setFixedHeight(THUMB_PX + 26 + self.thumbs.horizontalScrollBar()
                                   .sizeHint().height())
        self.thumbs.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.thumbs.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.thumbs.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.thumbs.setToolTip("this run's variations, best first, with how well each "
                               "matches the prompt (0 to 1): untick the ones you do not want "
                               "to keep")
        self.remove_button = QPushButton("Remove unticked")
        self.remove_button.setToolTip("the unticked variations' layers leave the project")
        self.remove_button.clicked.connect(self.remove_unticked)
        self.delete_check = QCheckBox()
        self.delete_check.setToolTip("also delete the unticked variations' GeoTIFFs from the "
                                     "output folder (this cannot be undone)")
        self.hide_button = QPushButton("Hide")
        self.hide_button.setToolTip("close this strip; the layers stay as they are")
        self.hide_button.clicked.connect(self.clear)
        # The buttons beside the thumbnails, not under them: every pixel of height counts on
        # a 768 px screen.
        self.delete_check.setText("delete files too")
        layout.addWidget(self.thumbs, 0, 0, 4, 1)
        layout.addWidget(self.remove_button, 0, 1)
        layout.addWidget(self.delete_check, 1, 1)
        layout.addWidget(self.hide_button, 2, 1)
        layout.setColumnStretch(0, 1)
        layout.setRowStretch(3, 1)
        self.removed: list[str] = []
        self.deleted: list[str] = []
        self.hide()

    def show_variations(self, variations: list) -> None:
        """``variations``: (layer, candidate, path) best first."""
        self.thumbs.clear()
        for rank, (layer, candidate, path) in enumerate(variations, start=1):
            # Under the thumbnail only what fits a narrow dock: the score (the order says the
            # rank), else the rank; seed, file and what the score means in the tooltip.
            text = f"#{rank}" if candidate.score is None else f"{candidate.score:.2f}"
            item = QListWidgetItem(text)
            item.setIcon(QIcon(thumbnail(layer)))
            item.setToolTip(f"variation {rank}, seed {candidate.seed}\n{Path(path).name}\n" + (
                f"{score_text(candidate.score)}: {SCORE_HELP}" if candidate.score is not None
                else "not scored: the engine has no Git-RSCLIP model"))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            item.setData(ID_ROLE, layer.id())
            item.setData(PATH_ROLE, str(path))
            self.thumbs.addItem(item)
        self.setVisible(len(variations) > 1)

    def items(self) -> list[QListWidgetItem]:
        return [self.thumbs.item(row) for row in range(self.thumbs.count())]

    def remove_unticked(self) -> tuple[list[str], list[str]]:
        """Remove the unticked variations' layers (and files, when asked); (ids, files)."""
        doomed = [item for item in self.items()
                  if item.checkState() != Qt.CheckState.Checked]
        ids = [item.data(ID_ROLE) for item in doomed]
        project = QgsProject.instance()
        project.removeMapLayers([i for i in ids if project.mapLayer(i) is not None])
        deleted = []
        if self.delete_check.isChecked():
            for item in doomed:
                path = Path(item.data(PATH_ROLE))
                for leftover in (path, path.with_name(path.name + ".aux.xml")):
                    if leftover.is_file():
                        leftover.unlink()
                        if leftover == path:
                            deleted.append(str(path))
        for item in doomed:
            self.thumbs.takeItem(self.thumbs.row(item))
        self.removed, self.deleted = ids, deleted
        self.delete_check.setChecked(False)
        if self.thumbs.count() <= 1:
            self.clear()
        return ids, deleted

    def clear(self) -> None:
        self.thumbs.clear()
        self.hide()


def thumbnail(layer) -> QPixmap:
    """The layer as its renderer draws it, small."""
    image = layer.previewAsImage(QSize(THUMB_PX, THUMB_PX), QColor(255, 255, 255))
    return QPixmap.fromImage(image)


def thumbnail_png(layer) -> bytes:
    """The thumbnail as PNG bytes (a history entry's own picture)."""
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    thumbnail(layer).save(buffer, "PNG")
    buffer.close()
    return bytes(data)
