"""The "Download model" dialog: fetch the weights into a model cache, or choose a local folder.
The download runs in a QgsTask (core.model_download); this widget collects input and shows
state: per model "ready" or "offline / model missing", byte progress, the command to run
elsewhere when there is no internet."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsApplication, QgsSettings, QgsTask
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from .core.setup.model_download import (
    MODELS,
    DownloadCancelled,
    DownloadError,
    OfflineError,
    Progress,
    cached_snapshot,
    check_model_folder,
    default_cache_dir,
    download_model,
)
from .settings import PREFIX


class DownloadTask(QgsTask):
    progressed = pyqtSignal(object, object, str)  # bytes done, total (ints may pass 2**31)
    done = pyqtSignal(bool, str)

    def __init__(self, repos: list[str], cache_dir: str) -> None:
        super().__init__("Text2Earth: downloading the model", QgsTask.Flag.CanCancel)
        self.repos = repos
        self.cache_dir = cache_dir
        self.message = ""

    def run(self) -> bool:
        try:
            for repo in self.repos:
                def report(progress: Progress, repo: str = repo) -> None:
                    if progress.total:
                        self.setProgress(100 * progress.done / progress.total)
                    self.progressed.emit(progress.done, progress.total,
                                         f"{repo}: {progress.file}")

                download_model(repo, self.cache_dir, on_progress=report,
                               is_canceled=self.isCanceled)
        except DownloadCancelled:
            self.message = "Download cancelled; it resumes where it stopped next time."
            return False
        except OfflineError as exc:
            self.message = str(exc)
            return False
        except DownloadError as exc:
            self.message = f"The download failed: {exc}"
            return False
        self.message = f"Downloaded into {self.cache_dir}."
        return True

    def finished(self, ok: bool) -> None:
        self.done.emit(ok, self.message)


class ModelDialog(QDialog):
    def __init__(self, parent=None, on_model: Callable[[str, str], None] | None = None) -> None:
        """``on_model(model, cache)`` is told the model setting and cache chosen here."""
        super().__init__(parent)
        self.setWindowTitle("Text2Earth: model weights")
        self.setObjectName("Text2EarthModelDialog")
        self.on_model = on_model
        self.task: DownloadTask | None = None
        settings = QgsSettings()
        layout = QVBoxLayout(self)

        download_box = QGroupBox("Download (Hugging Face, safetensors only)")
        form = QFormLayout(download_box)
        self.cache_widget = QgsFileWidget()
        self.cache_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.cache_widget.setFilePath(settings.value(PREFIX + "model_cache", "", type=str)
                                      or str(default_cache_dir()))
        self.cache_widget.fileChanged.connect(self.show_state)
        form.addRow("Model cache", self.cache_widget)
        self.repo_checks: dict[str, QCheckBox] = {}
        for repo in MODELS:
            check = QCheckBox(repo)
            check.setChecked(True)
            self.repo_checks[repo] = check
            form.addRow(check)
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        form.addRow(self.download_button, self.cancel_button)
        layout.addWidget(download_box)

        local_box = QGroupBox("Or use a local folder of weights (air-gapped sites)")
        local_form = QFormLayout(local_box)
        self.folder_widget = QgsFileWidget()
        self.folder_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.use_folder_button = QPushButton("Use this folder")
        self.use_folder_button.clicked.connect(self.use_folder)
        local_form.addRow("Model folder", self.folder_widget)
        local_form.addRow(self.use_folder_button)
        layout.addWidget(local_box)

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.state_label = QLabel()
        self.state_label.setWordWrap(True)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(500)
        for widget in (self.progress, self.state_label, self.status_label, self.log_view):
            layout.addWidget(widget)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(620, 480)
        self.show_state()

    def cache_dir(self) -> str:
        return self.cache_widget.filePath().strip() or str(default_cache_dir())

    def show_state(self, *args) -> None:
        lines = []
        for repo in MODELS:
            ready = cached_snapshot(repo, self.cache_dir()) is not None
            lines.append(f"{repo}: {'ready' if ready else 'offline / model missing'}")
        self.state_label.setText("\n".join(lines))

    def start(self) -> None:
        repos = [repo for repo, check in self.repo_checks.items() if check.isChecked()]
        if self.task is not None or not repos:
            return
        cache = self.cache_dir()
        QgsSettings().setValue(PREFIX + "model_cache", cache)
        self.task = DownloadTask(repos, cache)
        self.task.progressed.connect(self.show_progress)
        self.task.done.connect(self.finished_download)
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status_label.setText("Downloading…")
        self.progress.setValue(0)
        QgsApplication.taskManager().addTask(self.task)

    def show_progress(self, done, total, what: str) -> None:
        if total:
            self.progress.setValue(int(100 * done / total))
        self.status_label.setText(f"{done / 1e6:,.1f} of {total / 1e6:,.1f} MB — {what}")
        self.log_view.appendPlainText(what)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def finished_download(self, ok: bool, message: str) -> None:
        self.task = None
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status_label.setText(message)
        self.show_state()
        if ok:
            self.progress.setValue(100)
            if self.on_model is not None:
                self.on_model("", self.cache_dir())

    def use_folder(self) -> None:
        folder = self.folder_widget.filePath().strip()
        problems = check_model_folder(folder) if folder else ["choose a folder first"]
        if problems:
            self.status_label.setText(f"{folder or 'No folder'} cannot be used: "
                                      + "; ".join(problems))
            return
        QgsSettings().setValue(PREFIX + "model", folder)
        self.status_label.setText(f"The engine will use the weights in {folder}.")
        if self.on_model is not None:
            self.on_model(folder, self.cache_dir())

    def reject(self) -> None:
        if self.task is not None:
            self.hide()  # the download goes on in the background
            return
        super().reject()
