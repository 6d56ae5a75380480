"""The state of one engine job in the dock: progress bar, status line, live preview, and
what the end of the run means for the user. Shared by the Generate and Edit raster tabs."""

from __future__ import annotations

from collections.abc import Callable

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QPixmap
from qgis.PyQt.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .core.run_job import progress_percent, status_text
from .tasks import GenerateTask


class RunView(QWidget):
    """[run] [Cancel], then the progress of the job under way; the caller connects both."""

    def __init__(self, run_text: str, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.preview_label = QLabel()
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setMinimumHeight(128)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.preview_label)
        self.last_preview = b""

    def follow(self, task: GenerateTask) -> None:
        """Show this task's progress and previews from now on; only Cancel until it ends."""
        task.progressed.connect(self.show_progress)
        task.previewed.connect(self.show_preview)
        self.set_running(True)
        self.progress.setValue(0)
        self.status_label.setText("sending the job to the engine…")
        self.last_preview = b""

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def cancelling(self) -> None:
        self.status_label.setText("cancelling…")

    def show_progress(self, status: dict) -> None:
        self.status_label.setText(status_text(status))
        self.progress.setValue(int(progress_percent(status)))

    def show_preview(self, png: bytes) -> None:
        self.last_preview = bytes(png)
        pixmap = QPixmap()
        if pixmap.loadFromData(self.last_preview, "PNG"):
            self.preview_label.setPixmap(pixmap.scaledToWidth(
                min(256, max(128, self.preview_label.width())),
                Qt.TransformationMode.SmoothTransformation))

    def ended(self, task: GenerateTask, ok: bool, add_layer: Callable,
              warn: Callable[[str], None], failed: str):
        """The layer ``add_layer(task)`` made of the result, or None (and why, shown)."""
        self.set_running(False)
        if ok and task.result and task.path:
            layer = add_layer(task)
            if layer is None:
                warn(f"the engine wrote {task.path}, but QGIS cannot open it")
                return None
            self.progress.setValue(100)
            self.status_label.setText(f"done: {task.path}")
            return layer
        self.progress.setValue(0)
        if task.was_cancelled:
            self.status_label.setText("cancelled: nothing was written")
            return None
        self.status_label.setText(f"failed: {task.error}")
        warn(task.error or failed)
        return None
