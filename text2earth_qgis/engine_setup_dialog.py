"""The "Set up engine" dialog: one button. Before anything starts it says what will be
downloaded and installed (core.setup_summary); Python, folder, torch build, requirements,
index, wheels and source wait under a collapsed Advanced section, and their defaults (the
engine shipped with the plugin) work as they are. The work runs in QgsTasks
(core.venv_setup); this widget only collects input and shows state."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import QgsApplication, QgsSettings, QgsTask
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget
from qgis.PyQt.QtCore import Qt, QTimer, pyqtSignal
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

from .core.setup.setup_summary import failure_message, plan_summary
from .core.setup.venv_setup import (
    SetupCancelled,
    SetupError,
    default_venv,
    make_plan,
    pending_steps,
    run_setup,
)
from .settings import PREFIX, plugin_data_dir


class PlanTask(QgsTask):
    """Make the plan (find a Python, read the driver, try torch's index) without changing
    anything, and word it: seconds of probing that must not freeze QGIS."""

    planned = pyqtSignal(int, str)  # the request's number, the summary (or why it cannot)

    def __init__(self, number: int, options: dict, env: dict | None = None) -> None:
        super().__init__("Text2Earth: checking the engine set-up", QgsTask.Flag(0))
        self.number, self.options, self.env, self.text = number, options, env, ""

    def run(self) -> bool:
        try:
            plan = make_plan(**self.options)
            self.text = plan_summary(plan.torch.kind, plan.torch.reason,
                                     pending_steps(plan, self.env), str(plan.venv),
                                     plan.python, plan.python_version)
        except SetupError as exc:
            self.text = failure_message(exc, exc.step)
        except Exception as exc:  # noqa: BLE001 - a folder or file typed under Advanced
            self.text = failure_message(exc, "plan")
        return True

    def finished(self, ok: bool) -> None:
        self.planned.emit(self.number, self.text)


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
            self.message = failure_message(exc, exc.step, exc.log_path, exc.output)
            return False
        except Exception as exc:  # noqa: BLE001 - a bug must still end in a message
            self.message = (f"The set-up stopped on an unexpected error ({exc!r}). Copy "
                            "diagnostics puts the details on the clipboard for a bug report.")
            return False
        self.python = str(result.python)
        verify = result.verify
        gpu = "GPU ready" if verify.get("cuda_available") else "no GPU in use"
        repaired = (f"; repaired: {', '.join(result.repaired)}" if result.repaired else "")
        self.message = (f"The engine is set up ({result.seconds:.0f} s; torch "
                        f"{verify.get('torch', '?')}, {gpu}{repaired}). Log: "
                        f"{result.log_path}")
        return True

    def finished(self, ok: bool) -> None:
        self.done.emit(ok, self.message, self.python)


class EngineSetupDialog(QDialog):
    """Says what the set-up will do, starts it, shows its progress and log."""

    # ok, message: the outcome, for the message bar while the dialog is hidden
    setup_finished = pyqtSignal(bool, str)

    def __init__(self, parent=None, on_success: Callable[[str], None] | None = None,
                 env: dict | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Text2Earth: set up engine")
        self.setObjectName("Text2EarthEngineSetup")
        self.on_success = on_success
        self.env = env
        self.task: SetupTask | None = None
        self.plan_task: PlanTask | None = None
        self.plan_number = 0
        settings = QgsSettings()
        layout = QVBoxLayout(self)
        heading = QLabel("<b>Set up the Text2Earth engine</b>: PyTorch and the engine in a Python "
                         "environment of their own, beside QGIS.")
        heading.setWordWrap(True)
        layout.addWidget(heading)
        self.summary_label = QLabel("Checking this machine…")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.summary_label)

        self.advanced = QgsCollapsibleGroupBox("Advanced")
        form = QFormLayout(self.advanced)
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
        self.requirements_widget.lineEdit().setPlaceholderText(
            "empty: the requirements shipped with the plugin")
        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText(
            "empty: the engine shipped with the plugin (or a folder, wheel or URL)")
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
        self.advanced.setCollapsed(True)
        layout.addWidget(self.advanced)

        self.use_check = QCheckBox("Use this engine when done")
        self.use_check.setChecked(True)
        layout.addWidget(self.use_check)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(3000)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.log_view, 4)
        # Nothing to show before a start: the summary says what will happen.
        self.progress.hide()
        self.log_view.hide()
        layout.addStretch(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.start_button = QPushButton("Set up")
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel set-up")
        self.cancel_button.setEnabled(False)
        buttons.addButton(self.start_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        layout.addWidget(buttons)

        # Any change under Advanced re-words the summary (once typing pauses).
        self.replan_timer = QTimer(self)
        self.replan_timer.setSingleShot(True)
        self.replan_timer.setInterval(400)
        self.replan_timer.timeout.connect(self.replan)
        for widget in (self.python_widget, self.folder_widget, self.requirements_widget,
                       self.wheels_widget):
            widget.fileChanged.connect(self.replan_timer.start)
        for edit in (self.source_edit, self.index_edit):
            edit.textChanged.connect(self.replan_timer.start)
        self.torch_combo.currentTextChanged.connect(self.replan_timer.start)
        self.resize(640, 480)
        self.replan()

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

    def replan(self) -> None:
        """Word what a set-up with the current options would do, in the background."""
        options = self.options()
        if not options["venv"]:
            self.summary_label.setText("Choose a folder for the engine under Advanced.")
            return
        self.plan_number += 1
        self.plan_task = PlanTask(self.plan_number, options, self.env)
        self.plan_task.planned.connect(self.show_plan)
        QgsApplication.taskManager().addTask(self.plan_task)

    def show_plan(self, number: int, text: str) -> None:
        if number == self.plan_number:  # an answer to older options is stale
            self.plan_task = None
            self.summary_label.setText(text)

    def start(self) -> None:
        if self.task is not None:
            return
        options = self.options()
        if not options["venv"]:
            self.status_label.setText("Choose a folder for the engine under Advanced first.")
            return
        settings = QgsSettings()
        settings.setValue(PREFIX + "setup_venv", options["venv"])
        settings.setValue(PREFIX + "setup_python", options["python"] or "")
        self.log_view.clear()
        self.progress.setValue(0)
        self.progress.show()
        self.log_view.show()
        self.status_label.setText("Setting up… Closing this window does not stop it.")
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
        self.replan()  # the summary now says what is left (nothing, or a repair)
        self.setup_finished.emit(ok, message)

    def reject(self) -> None:
        if self.task is not None:  # closing hides the dialog; the set-up goes on
            self.hide()
            return
        super().reject()
