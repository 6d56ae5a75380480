"""The engine's state pinned at the top of the dock, with the one action that moves a user
on (Set up engine…, Connect, Restart; Download model… while only demo weights are there),
and the Engine tab's settings. Widgets only: the dock runs the engine tasks."""

from __future__ import annotations

from qgis.core import QgsSettings
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .core.service.engine_manager import CONNECTED, CRASHED, NOT_FOUND, STARTING, EngineManager
from .core.setup.model_presence import demo_expected
from .engine_tools import engine_tools_row
from .form_layout import finish_form, narrow, scrolled_form, wrapping_form
from .run_view import StatusLine

SETTINGS = "text2earth/"
SET_UP, CONNECT, RESTART, STARTING_TEXT = "Set up engine…", "Connect", "Restart", "Starting…"


def demo_weights(health: dict) -> bool:
    return any(m.get("pipeline_check") for m in (health or {}).get("models") or [])


class EngineBar(QWidget):
    """'Engine: <state>' [action]; below it, while the real model is missing, what to do."""

    connect_requested = pyqtSignal()
    setup_requested = pyqtSignal()
    models_requested = pyqtSignal()
    model_folder_chosen = pyqtSignal(str)

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        row = QHBoxLayout()
        self.label = StatusLine("Engine: not connected")
        self.action_button = QPushButton(CONNECT)
        self.action_button.clicked.connect(self._act)
        row.addWidget(self.label, 1)
        row.addWidget(self.action_button)
        layout.addLayout(row)
        self.model_row = QWidget()
        model_layout = QGridLayout(self.model_row)
        model_layout.setContentsMargins(0, 0, 0, 0)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.download_button = QPushButton("Download model…")
        self.download_button.clicked.connect(self.models_requested.emit)
        self.folder_button = QPushButton("Model folder…")
        self.folder_button.setToolTip("use the Text2Earth weights in a folder on this machine")
        self.folder_button.clicked.connect(self.choose_model_folder)
        model_layout.addWidget(self.model_label, 0, 0, 1, 2)
        model_layout.addWidget(self.download_button, 1, 0)
        model_layout.addWidget(self.folder_button, 1, 1)
        layout.addWidget(self.model_row)
        self.model_row.hide()

    def _act(self) -> None:
        if self.action_button.text() == SET_UP:
            self.setup_requested.emit()
        else:
            self.connect_requested.emit()

    def choose_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of the Text2Earth weights")
        if folder:
            self.model_folder_chosen.emit(folder)

    def show_state(self, manager: EngineManager, busy: bool) -> None:
        state = STARTING if busy else manager.state
        self.label.setText(f"Engine: {manager.message or state}")
        if state == NOT_FOUND:
            text = SET_UP
        elif state == STARTING:
            text = STARTING_TEXT
        elif state == CRASHED:
            text = RESTART
        else:
            text = CONNECT
        self.action_button.setText(text)
        self.action_button.setEnabled(state not in (CONNECTED, STARTING))
        health = manager.health if state == CONNECTED else {}
        demo = state == CONNECTED and (demo_weights(health) or demo_expected(manager.settings))
        missing = bool(health.get("model_error"))
        if demo or missing:
            self.model_label.setText(
                "Demo weights: results are pipeline checks (noise), not imagery. Get the "
                "real model (about 5 GB):" if demo else
                "The Text2Earth model is not on this machine:")
        self.model_row.setVisible(demo or missing)


class EngineSettingsPanel(QWidget):
    """Where the engine is (its Python, or a URL), how it runs, and the set-up tools."""

    apply_requested = pyqtSignal()

    def __init__(self, dock, manager: EngineManager) -> None:
        super().__init__()
        settings = QgsSettings()
        layout = scrolled_form(self, QWidget())
        form = wrapping_form()
        self.python_widget = QgsFileWidget()
        self.python_widget.setFilePath(manager.settings.python or "")
        self.python_widget.setToolTip(
            "the Python of the engine's own virtual environment (never QGIS's); empty: "
            "the one Set up engine… made, or a development checkout's")
        self.url_edit = QLineEdit(manager.settings.url or "")
        self.url_edit.setPlaceholderText("empty: start a local engine; or http://host:port")
        self.token_widget = QgsFileWidget()
        self.token_widget.setFilePath(manager.settings.token_file or "")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cuda", "cpu", "mps"])
        self.device_combo.setCurrentText(manager.settings.device or "auto")
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["auto", "fp32", "bf16", "fp16"])
        self.precision_combo.setCurrentText(
            settings.value(SETTINGS + "precision", "auto", type=str))
        self.precision_combo.setToolTip(
            "auto: fp16 on NVIDIA GPUs, bf16 on CPUs that run it natively, else fp32 (exact, "
            "slowest)")
        self.port_spin = QSpinBox()
        self.port_spin.setRange(0, 65535)
        self.port_spin.setSpecialValueText("any free port")
        self.port_spin.setValue(manager.settings.port)
        narrow(self.device_combo, self.precision_combo)
        apply_button = QPushButton("Apply and reconnect")
        apply_button.clicked.connect(self.apply_requested.emit)
        form.addRow("Engine Python", self.python_widget)
        form.addRow("Engine URL", self.url_edit)
        form.addRow("Token file", self.token_widget)
        form.addRow("Device", self.device_combo)
        form.addRow("Precision", self.precision_combo)
        form.addRow("Port", self.port_spin)
        form.addRow(apply_button)
        layout.addLayout(form)
        layout.addWidget(engine_tools_row(dock))
        layout.addStretch(1)
        finish_form(self)

    def values(self) -> dict:
        device = self.device_combo.currentText()
        return {
            "engine_python": self.python_widget.filePath().strip(),
            "engine_url": self.url_edit.text().strip(),
            "token_file": self.token_widget.filePath().strip(),
            "device": "" if device == "auto" else device,
        }
