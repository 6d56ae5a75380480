"""The state of one engine job, pinned under each tab's form: [run] [Cancel], progress, a
one-line status and a compact preview; what the end of a run means for the user; and the tab
that runs one job at a time (RunPanel). Shared by the Generate and Edit raster tabs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QPixmap
from qgis.PyQt.QtWidgets import (
    QApplication,
    QGridLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QWidget,
)

from .core.service.run_job import progress_percent, status_text
from .core.time_left import TimeLeft
from .tasks import GenerateTask

try:  # Qt6 (QGIS 4) has QAction in QtGui; Qt5 in QtWidgets
    from qgis.PyQt.QtGui import QAction
except ImportError:
    from qgis.PyQt.QtWidgets import QAction

PREVIEW_PX = 72  # small enough to keep the action row on a 768 px screen


MAX_CHARS = 400
STATUS_LINES = 2  # wrapped, but never so tall that the form's first fields leave a 768 px screen
BREAK_AFTER = re.compile(r"([/\\_.,:;=&?-])")
ZERO_WIDTH_SPACE = "\u200b"


def wrappable(text: str) -> str:
    """``text`` as a word-wrapping label shows it: paths and long names may break after their
    separators, and only its first lines (the whole text is the tooltip)."""
    lines = text.splitlines()
    shown = "\n".join(lines[:STATUS_LINES])
    if len(shown) > MAX_CHARS:
        shown = shown[:MAX_CHARS - 1].rstrip()
    if shown != text.strip():
        shown = shown.rstrip() + "…"
    return BREAK_AFTER.sub("\\1" + ZERO_WIDTH_SPACE, shown)


class StatusLine(QLabel):
    """A status that wraps to the dock's width (never cut at its edge), in at most
    ``max_lines`` lines (then shortened with "…"); the whole text is its tooltip.

    ``text()`` answers the whole text, so callers and tests read what was said, not what fit.
    """

    def __init__(self, text: str = "", max_lines: int = STATUS_LINES) -> None:
        super().__init__()
        self._full = ""
        self.max_lines = max_lines
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.PlainText)
        # What is shown is shortened and carries zero-width break points: a selection would
        # copy a path that does not open. The context menu's Copy gives the whole text.
        copy = QAction("Copy", self)
        copy.triggered.connect(lambda: QApplication.clipboard().setText(self._full))
        self.addAction(copy)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        self._full = text
        self.setToolTip(text)
        self._fit()

    def text(self) -> str:
        return self._full

    def _fit(self) -> None:
        shown = wrappable(self._full)
        super().setText(shown)
        width = self.width()
        limit = self.max_lines * self.fontMetrics().lineSpacing() + 2
        while width > 20 and len(shown) > 20 and self.heightForWidth(width) > limit:
            shown = shown[: int(len(shown) * 0.85)].rstrip() + "…"
            super().setText(shown)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit()


class RunView(QWidget):
    """[preview] [run] [Cancel] / progress / status; the caller connects both buttons."""

    def __init__(self, run_text: str, parent=None) -> None:
        super().__init__(parent)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        self.preview_label = QLabel()
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setFixedSize(PREVIEW_PX, PREVIEW_PX)
        self.preview_label.setToolTip("live preview of the run")
        self.run_button = QPushButton(run_text)
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.compare_button = QPushButton("Before/after")
        self.compare_button.setCheckable(True)
        self.compare_button.setEnabled(False)
        self.compare_button.setToolTip(
            "the last result: press to hide it and see what lies under it; press again to "
            "bring it back")
        self.compare_button.toggled.connect(self._compare)
        self.result_layer_id = ""
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status_label = StatusLine("")
        layout.addWidget(self.preview_label, 0, 0, 3, 1)
        layout.addWidget(self.run_button, 0, 1)
        layout.addWidget(self.cancel_button, 0, 2)
        layout.addWidget(self.compare_button, 0, 3)
        layout.addWidget(self.progress, 1, 1, 1, 3)
        layout.addWidget(self.status_label, 2, 1, 1, 3)
        layout.setColumnStretch(1, 2)
        layout.setColumnStretch(2, 1)
        layout.setColumnStretch(3, 1)
        self.last_preview = b""
        self.failed = False  # the status says why the last run failed
        self.blocked_reason = ""
        self.running = False
        self.cancel_requested = False
        self.time_left = TimeLeft()
        self.prefix = ""  # "3 variations: " while a run makes several

    def follow(self, task: GenerateTask, prefix: str = "") -> None:
        """Show this task's progress and previews from now on; only Cancel until it ends."""
        task.progressed.connect(self.show_progress)
        task.previewed.connect(self.show_preview)
        self.prefix = prefix
        self.cancel_requested = False
        self.time_left = TimeLeft()
        self.set_running(True)
        self.show_result(None)
        self.progress.setValue(0)
        self.failed = False
        self.status_label.setText(prefix + "sending the job to the engine…")
        self.clear_preview()

    def set_running(self, running: bool) -> None:
        self.running = running
        self.run_button.setEnabled(not running and not self.blocked_reason)
        self.cancel_button.setEnabled(running)

    def block(self, reason: str) -> None:
        """Offer the run button only when ``reason`` is empty; the reason is its tooltip."""
        self.blocked_reason = reason
        self.run_button.setToolTip(reason)
        self.set_running(self.running)

    def cancelling(self) -> None:
        self.cancel_requested = True
        self.cancel_button.setEnabled(False)
        self.status_label.setText("cancelling…")

    def show_progress(self, status: dict) -> None:
        if self.cancel_requested:
            return  # the engine's last steps must not hide that a cancel is under way
        shown = {**status, "eta_s": self.time_left.update(status.get("eta_s"))}
        self.status_label.setText(self.prefix + status_text(shown))
        self.progress.setValue(int(progress_percent(status)))

    def show_preview(self, png: bytes) -> None:
        if self.cancel_requested:
            return
        self.last_preview = bytes(png)
        pixmap = QPixmap()
        if pixmap.loadFromData(self.last_preview, "PNG"):
            self.preview_label.setPixmap(pixmap.scaled(
                PREVIEW_PX, PREVIEW_PX, Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation))

    def show_result(self, layer) -> None:
        """The layer Before/after hides and shows again (None: no result to compare)."""
        self.compare_button.setChecked(False)
        self.result_layer_id = layer.id() if layer is not None else ""
        self.compare_button.setEnabled(layer is not None)

    def _compare(self, before: bool) -> None:
        node = QgsProject.instance().layerTreeRoot().findLayer(self.result_layer_id)
        if node is None:  # removed by the user meanwhile
            self.show_result(None)
            return
        node.setItemVisibilityChecked(not before)

    def clear_failure(self) -> None:
        """The engine changed (restarted, reconnected): the last failure is stale."""
        if self.failed and not self.running:
            self.failed = False
            self.status_label.setText("")
            self.progress.setValue(0)

    def clear_preview(self) -> None:
        self.last_preview = b""
        self.preview_label.clear()

    def ended(self, task: GenerateTask, ok: bool, add_layer: Callable,
              warn: Callable[[str], None], failed: str,
              inform: Callable[[str], None] | None = None):
        """The layer ``add_layer(task)`` made of the result, or None (and why, shown)."""
        self.set_running(False)
        if ok and task.result and task.path:
            layer = add_layer(task)
            if layer is None:
                warn(f"the engine wrote {task.path}, but QGIS cannot open it")
                return None
            self.progress.setValue(100)
            self.status_label.setText(f"done: {task.path}")
            self.show_result(layer)
            return layer
        self.progress.setValue(0)
        self.clear_preview()
        if task.was_cancelled or self.cancel_requested:
            self.status_label.setText("Cancelled: nothing was written")
            if inform is not None:
                inform("Cancelled: nothing was written.")
            return None
        self.failed = True
        self.status_label.setText(f"failed: {task.error or failed}")
        warn(task.error or failed)
        return None


class RunPanel(QWidget):
    """A dock tab that runs one engine job at a time, followed by its RunView: the start
    (the job built, its task made and followed), Cancel, and the end (the result's layer, or
    why there is none). A tab builds its jobs (``start(build)``) and adds its layers
    (``add_layer``); the rest is here, the same for every tab."""

    layer_added = pyqtSignal(object)
    failed_text = "the run failed"  # said when the engine gave no reason

    def __init__(self, dock) -> None:
        super().__init__()
        self.dock = dock
        self.task: GenerateTask | None = None

    def make_run_view(self, run_text: str) -> RunView:
        """The pinned run row; its run button is the tab's to connect."""
        self.run_view = RunView(run_text)
        self.cancel_button = self.run_view.cancel_button
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = self.run_view.progress
        self.status_label = self.run_view.status_label
        return self.run_view

    # ----- what a tab provides -------------------------------------------------------------

    def new_task(self, job: dict, destination: Path) -> GenerateTask:
        """The task that runs ``job`` (a tab notes here what the run needs at its end)."""
        return GenerateTask(self.dock.manager, job, str(destination))

    def progress_prefix(self, job: dict) -> str:
        return ""

    def show_running(self, running: bool) -> None:
        """The tab's controls beside run and Cancel (RunView sets those two)."""

    def add_layer(self, task: GenerateTask):
        """The layer of the task's result, or None when QGIS cannot open it."""
        raise NotImplementedError

    def run_ended(self, task: GenerateTask, layer) -> None:
        """After the run's end is shown: ``layer`` is its result's, or None."""

    # ----- start, cancel, end ----------------------------------------------------------------

    def start(self, build: Callable[[], tuple[dict, Path]]) -> None:
        """Run the job ``build`` makes (ValueError: a message for the user, nothing runs)."""
        if self.task is not None:
            return
        try:
            job, destination = build()
        except ValueError as exc:
            self.status_label.setText("")  # "drawing…": the build's own, now stale
            self.dock.show_message(str(exc), warning=True)
            return
        self.task = self.new_task(job, destination)
        self.run_view.follow(self.task, self.progress_prefix(job))
        self.show_running(True)
        self.task.completed.connect(self.finished)
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.run_view.cancelling()
            self.task.cancel()

    def finished(self, ok: bool) -> None:
        task, self.task = self.task, None
        self.show_running(False)
        self.dock.show_engine_state()
        if task is None:
            self.run_view.set_running(False)
            return
        layer = self.run_view.ended(
            task, ok, self.add_layer,
            lambda text: self.dock.show_message(text, warning=True), self.failed_text,
            inform=lambda text: self.dock.show_message(text))
        self.run_ended(task, layer)

    def cleanup(self) -> None:
        if self.task is not None:
            self.task.cancel()
