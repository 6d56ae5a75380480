"""The "Set up engine" dialog: choose a Python and a folder, watch the set-up, read the advice.
The work runs in a QgsTask (core.venv_setup); this widget only collects input and shows state."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsApplication, QgsSettings, QgsTask
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from .core.failure_advice import SETUP, explain
from .core.venv_setup import (
    SetupCancelled,
    SetupError,
    checkout_root,
    default_venv,
    make_plan,
    run_setup,
)
from .settings import PREFIX, plugin_data_dir


class SetupTask(QgsTask):
    """Plan and run the set-up; every output line goes to ``line``, the outcome to ``done``."""

    line = pyqtSignal(str)
    done = pyqtSignal(bool, str, str)  # ok, message, the venv's python (when ok)

    def __init__(self, options: dict, env: dict | None = None) -> None:
        super().__init__("Text2Earth: setting up the engine", QgsTask.Flag.CanCancel)
        self.options = options
        self.env = env
        self.message = ""
        self.python = ""

    def _progress(self, step: str, fraction: float, line: str) -> None:
        self.setProgress(100 * fraction)
        self.line.emit(f"[{step}] {line}")

    def run(self) -> bool:
        try:
            plan = make_plan(**self.options)
            self.line.emit(f"torch build: {plan.torch.reason}")
            result = run_setup(plan, self._progress, self.isCanceled, self.env)
        except SetupCancelled:
            self.message = "Set-up cancelled: run it again to continue where it stopped."
            return False
        except SetupError as exc:
            advice = explain(str(exc), SETUP, log_path=exc.log_path, log_tail=exc.output,
                             step=exc.step)
            self.message = advice.message(with_log=False) + (
                f"\nLog: {exc.log_path}" if exc.log_path else "")
            return False
        self.python = str(result.python)
        verify = result.verify
        gpu = "GPU ready" if verify.get("cuda_available") else "no GPU in use"
        self.message = (f"The engine is set up ({result.seconds:.0f} s; torch "
                        f"{verify.get('torch', '?')}, {gpu}). Log: {result.log_path}")
        return True

    def finished(self, ok: bool) -> None:
        self.done.emit(ok, self.message, self.python)


class EngineSetupDialog(QDialog):
    """Collects where and with what to set up, starts the task, shows its progress and log."""

    def __init__(self, parent=None, on_success: Callable[[str], None] | None = None,
                 env: dict | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Text2Earth: set up engine")
        self.setObjectName("Text2EarthEngineSetup")
        self.on_success = on_success
        self.env = env
        self.task: SetupTask | None = None
        settings = QgsSettings()
        root = checkout_root()
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.python_widget = QgsFileWidget()
        self.python_widget.setFilePath(settings.value(PREFIX + "setup_python", "", type=str))
        self.python_widget.lineEdit().setPlaceholderText(
            "empty: a Python 3.10+ on this machine is looked for")
        self.folder_widget = QgsFileWidget()
        self.folder_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder_widget.setFilePath(settings.value(
            PREFIX + "setup_venv", str(default_venv(plugin_data_dir())), type=str))
        self.torch_combo = QComboBox()
        self.torch_combo.addItems(["auto", "cuda", "cpu"])
        self.requirements_widget = QgsFileWidget()
        self.requirements_widget.setFilePath(str(root / "requirements.txt") if root else "")
        self.source_edit = QLineEdit(str(root) if root else "")
        self.source_edit.setPlaceholderText("the engine's folder, wheel or URL")
        self.index_edit = QLineEdit()
        self.index_edit.setPlaceholderText("empty: pip's own settings (pip.conf, PIP_INDEX_URL)")
        self.wheels_widget = QgsFileWidget()
        self.wheels_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.wheels_widget.setToolTip("offline: install only from this folder of wheels")
        form.addRow("Python", self.python_widget)
        form.addRow("Engine folder", self.folder_widget)
        form.addRow("torch build", self.torch_combo)
        form.addRow("Requirements", self.requirements_widget)
        form.addRow("Engine source", self.source_edit)
        form.addRow("Package index", self.index_edit)
        form.addRow("Offline wheels", self.wheels_widget)
        layout.addLayout(form)
        self.use_check = QCheckBox("Use this engine when done")
        self.use_check.setChecked(True)
        layout.addWidget(self.use_check)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status_label = QLabel("Installs the engine into its own environment; QGIS's "
                                   "Python is left untouched.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(3000)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.log_view, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.start_button = QPushButton("Set up")
        self.cancel_button = QPushButton("Cancel set-up")
        self.cancel_button.setEnabled(False)
        buttons.addButton(self.start_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        layout.addWidget(buttons)
        self.resize(640, 520)

    def options(self) -> dict:
        return {
            "venv": self.folder_widget.filePath().strip(),
            "python": self.python_widget.filePath().strip() or None,
            "torch": self.torch_combo.currentText(),
            "requirements_file": self.requirements_widget.filePath().strip() or None,
            "engine_source": self.source_edit.text().strip() or None,
            "index_url": self.index_edit.text().strip() or None,
            "wheels": self.wheels_widget.filePath().strip() or None,
        }

    def start(self) -> None:
        if self.task is not None:
            return
        options = self.options()
        if not options["venv"]:
            self.status_label.setText("Choose a folder for the engine first.")
            return
        settings = QgsSettings()
        settings.setValue(PREFIX + "setup_venv", options["venv"])
        settings.setValue(PREFIX + "setup_python", options["python"] or "")
        self.log_view.clear()
        self.progress.setValue(0)
        self.status_label.setText("Setting up… (the first run downloads about 3 GB)")
        self.task = SetupTask(options, self.env)
        self.task.line.connect(self.log_view.appendPlainText)
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.task.done.connect(self.finished_setup)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def finished_setup(self, ok: bool, message: str, python: str) -> None:
        self.task = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status_label.setText(message)
        if ok:
            self.progress.setValue(100)
            if self.use_check.isChecked():
                QgsSettings().setValue(PREFIX + "engine_python", python)
                if self.on_success is not None:
                    self.on_success(python)

    def reject(self) -> None:
        if self.task is not None:  # closing hides the dialog; the set-up goes on
            self.hide()
            return
        super().reject()
