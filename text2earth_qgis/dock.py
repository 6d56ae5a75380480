"""The Text2Earth dock: the engine's state pinned on top, then one tab per task (Generate,
Edit raster, History, Engine), each its own module. The dock wires them together and runs
the engine's connect task; the tabs collect input and show state."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsSettings
from qgis.gui import QgsDockWidget, QgsMessageBarItem
from qgis.PyQt.QtCore import QTimer, pyqtSignal
from qgis.PyQt.QtWidgets import QApplication, QTabWidget, QVBoxLayout, QWidget

from .core.service.engine_manager import EngineManager
from .edit_panel import EDIT_TYPES, EditPanel
from .engine_panel import EngineBar, EngineSettingsPanel
from .engine_tools import diagnostics_for
from .generate_panel import GeneratePanel
from .history_panel import HistoryPanel
from .tasks import EngineTask

SETTINGS = "text2earth/"
WATCH_MS = 2000  # how often the local engine's process is checked for a crash


class Text2EarthDock(QgsDockWidget):
    """Prompt + extent + resolution in, a georeferenced synthetic layer out."""

    layer_added = pyqtSignal(object)
    setup_requested = pyqtSignal()  # the plugin opens the set-up / model dialogs
    models_requested = pyqtSignal()
    model_folder_chosen = pyqtSignal(str)

    def __init__(self, iface, manager: EngineManager, parent=None) -> None:
        super().__init__("Text2Earth", parent or iface.mainWindow())
        self.setObjectName("Text2EarthDock")
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.manager = manager
        self.engine_task: EngineTask | None = None
        self._messages: list = []  # the bar items this dock pushed
        self._shown_state: tuple | None = None

        self.engine_bar = EngineBar()
        self.engine_bar.connect_requested.connect(self.connect_engine)
        self.engine_bar.setup_requested.connect(self.setup_requested)
        self.engine_bar.models_requested.connect(self.models_requested)
        self.engine_bar.model_folder_chosen.connect(self.model_folder_chosen)
        self.generate = GeneratePanel(self)
        self.edit_panel = EditPanel(self)
        self.history_panel = HistoryPanel(self.canvas)
        self.engine_settings = EngineSettingsPanel(self, manager)
        self.engine_settings.apply_requested.connect(self.apply_engine_settings)
        self.generate.layer_added.connect(self.layer_added)
        self.generate.finished_run.connect(self.history_panel.add)
        self.edit_panel.layer_added.connect(self.layer_added)
        self.history_panel.reuse_requested.connect(self.load_job)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.generate, "Generate")
        self.tabs.addTab(self.edit_panel, "Edit raster")
        self.tabs.addTab(self.history_panel, "History")
        self.tabs.addTab(self.engine_settings, "Engine")
        self.tabs.currentChanged.connect(self._tab_changed)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.engine_bar)
        layout.addWidget(self.tabs, 1)
        self.setWidget(body)
        self.show_engine_state()
        # A local engine that dies between jobs (killed, crashed) shows as crashed at once.
        self.watch_timer = QTimer(self)
        self.watch_timer.setInterval(WATCH_MS)
        self.watch_timer.timeout.connect(self.watch_engine)
        self.watch_timer.start()

    # ----- the tabs ----------------------------------------------------------------------

    def _tab_changed(self, index: int) -> None:
        """Only the tab on show keeps things on the map (outline, polygons' tool)."""
        current = self.tabs.widget(index)
        if current is not self.generate:
            self.generate.leave()
        else:
            self.generate.show_outline()
        if current is not self.edit_panel:
            self.edit_panel.leave()

    def output_folder(self) -> Path:
        return self.generate.output_folder()

    def precision(self) -> str:
        return self.engine_settings.precision_combo.currentText()

    def add_history(self, job: dict, result: dict, preview: bytes = b"") -> None:
        self.history_panel.add(job, result, preview)

    def load_job(self, job: dict) -> None:
        """Fill the form from a job (history 'reuse', or a layer's 'regenerate')."""
        if job.get("type") in EDIT_TYPES:
            self.tabs.setCurrentWidget(self.edit_panel)
            self.edit_panel.load_job(job)
            return
        self.tabs.setCurrentWidget(self.generate)
        self.generate.load_job(job)

    # ----- engine ------------------------------------------------------------------------

    def apply_engine_settings(self) -> None:
        settings = QgsSettings()
        values = self.engine_settings.values()
        for key, value in values.items():
            settings.setValue(SETTINGS + key, value)
        settings.setValue(SETTINGS + "port", self.engine_settings.port_spin.value())
        settings.setValue(SETTINGS + "precision", self.precision())
        self.manager.stop()
        engine = self.manager.settings
        engine.port = self.engine_settings.port_spin.value()
        engine.python = values["engine_python"] or None
        engine.url = values["engine_url"] or None
        engine.token_file = values["token_file"] or engine.token_file
        engine.device = values["device"] or None
        self.connect_engine()

    def connect_engine(self) -> None:
        if self.engine_task is not None:
            return
        self.engine_task = EngineTask(self.manager)
        self.engine_task.done.connect(self._engine_done)
        self.show_engine_state()
        QgsApplication.taskManager().addTask(self.engine_task)

    def _engine_done(self, ok: bool, error: str) -> None:
        self.engine_task = None
        self.show_engine_state()
        if not ok and self.manager.state != "not found":  # the bar's button says what to do
            log = self.manager.log_tail()
            self.show_message(error + (f"\n{log}" if log else ""), warning=True)

    def watch_engine(self) -> None:
        if self.manager.check_alive():
            self.show_engine_state()

    def show_engine_state(self) -> None:
        busy = self.engine_task is not None
        state = (self.manager.state, self.manager.message, busy)
        if state != self._shown_state:  # what was said about the old state is stale now
            self._shown_state = state
            self.clear_messages()
        self.engine_bar.show_state(self.manager, busy=busy)
        self.generate.update_info()  # the engine's limits and weights decide what is offered

    def clear_messages(self) -> None:
        """Take back this dock's messages and the tabs' failures: the engine changed."""
        bar = self.iface.messageBar()
        for item in self._messages:
            try:
                bar.popWidget(item)
            except (RuntimeError, TypeError):  # gone already (timed out, or cleared)
                pass
        self._messages = []
        for view in (self.generate.run_view, self.edit_panel.run_view):
            view.clear_failure()

    def copy_diagnostics(self) -> str:
        text = diagnostics_for(self.manager)
        QApplication.clipboard().setText(text)
        self.show_message("Diagnostics copied to the clipboard (the token is left out).")
        return text

    def show_message(self, text: str, warning: bool = False) -> None:
        level = Qgis.MessageLevel.Warning if warning else Qgis.MessageLevel.Info
        item = QgsMessageBarItem("Text2Earth", text, level, 10)
        self.iface.messageBar().pushItem(item)
        self._messages = [*self._messages[-9:], item]

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.generate.leave()
        self.edit_panel.leave()
        super().closeEvent(event)

    def cleanup(self) -> None:
        """Called by the plugin on unload: disconnect from project and canvas."""
        self.watch_timer.stop()
        self.generate.cleanup()
        self.edit_panel.cleanup()
        self.history_panel.cleanup()
