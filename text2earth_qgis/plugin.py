"""Plugin entry: actions, menus, the dock and the engine's lifecycle. PyQGIS + stdlib only."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtGui import QIcon

try:  # Qt6 (QGIS 4) has QAction in QtGui; Qt5 in QtWidgets
    from qgis.PyQt.QtGui import QAction
except ImportError:
    from qgis.PyQt.QtWidgets import QAction

from .core.service.engine_manager import EngineManager
from .qgis_compat import raster_layer_type
from .settings import engine_settings
from .swipe_tool import SwipeAction

MENU = "&Text2Earth"


def icon() -> QIcon:
    return QIcon(str(Path(__file__).resolve().parent / "resources" / "icon.svg"))


class Text2EarthPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: list[QAction] = []
        self.dock = None
        self.provider = None
        self.regenerate_action: QAction | None = None
        self.swipe: SwipeAction | None = None
        self.menu_actions: list[QAction] = []  # set-up and model: the menu only
        self.dialogs: dict = {}
        self.manager = EngineManager(engine_settings())

    def initProcessing(self) -> None:  # noqa: N802 - QGIS's name
        from .processing.provider import Text2EarthProvider

        self.provider = Text2EarthProvider(self.manager)
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS's name
        self.initProcessing()
        self.toggle_action = QAction(icon(), "Text2Earth", self.iface.mainWindow())
        self.toggle_action.setCheckable(True)
        self.toggle_action.setToolTip("Generate synthetic remote-sensing imagery")
        self.toggle_action.toggled.connect(self.toggle_dock)
        self.iface.addToolBarIcon(self.toggle_action)
        self.iface.addPluginToRasterMenu(MENU, self.toggle_action)
        self.actions.append(self.toggle_action)

        for text, slot in (("Set up engine…", self.open_engine_setup),
                           ("Download model…", self.open_model_dialog)):
            action = QAction(text, self.iface.mainWindow())
            action.triggered.connect(slot)
            self.iface.addPluginToRasterMenu(MENU, action)
            self.menu_actions.append(action)

        self.regenerate_action = QAction("Regenerate with these settings (Text2Earth)",
                                         self.iface.mainWindow())
        self.regenerate_action.triggered.connect(self.regenerate_current)
        self.iface.addCustomActionForLayerType(
            self.regenerate_action, "", raster_layer_type(), False)
        QgsApplication.instance().aboutToQuit.connect(self.manager.stop)
        self.swipe = SwipeAction(self.iface)  # "Swipe…" in raster layers' context menu
        # Layers generated earlier (a reopened project) get the action too.
        QgsProject.instance().layersAdded.connect(self._offer_regenerate_on)
        self._offer_regenerate_on(QgsProject.instance().mapLayers().values())

    def ensure_dock(self):
        if self.dock is None:
            from qgis.PyQt.QtCore import Qt

            from .dock import Text2EarthDock

            self.dock = Text2EarthDock(self.iface, self.manager)
            self.dock.layer_added.connect(self._offer_regenerate)
            self.dock.visibilityChanged.connect(self.toggle_action.setChecked)
            self.dock.setup_requested.connect(self.open_engine_setup)
            self.dock.models_requested.connect(self.open_model_dialog)
            self.dock.model_folder_chosen.connect(lambda folder: self.use_model(
                folder, self.manager.settings.model_cache))
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        return self.dock

    def toggle_dock(self, visible: bool) -> None:
        dock = self.ensure_dock() if visible else self.dock
        if dock is None:
            return
        dock.setVisible(visible)
        if visible and self.manager.client is None:
            dock.connect_engine()

    def _offer_regenerate(self, layer) -> None:
        self.iface.addCustomActionForLayer(self.regenerate_action, layer)

    def _offer_regenerate_on(self, layers) -> None:
        from .layers import job_of_layer

        for layer in layers:
            if self.regenerate_action is not None and job_of_layer(layer) is not None:
                self._offer_regenerate(layer)

    def regenerate_current(self) -> None:
        from .layers import job_of_layer

        job = job_of_layer(self.iface.activeLayer())
        if job is None:
            return
        self.toggle_action.setChecked(True)
        self.ensure_dock().load_job(job)

    # ----- engine set-up and model weights (dialogs in their own modules) --------------------

    def _show(self, name: str, make):
        dialog = self.dialogs.get(name) or self.dialogs.setdefault(name, make())
        dialog.show()
        dialog.raise_()
        return dialog

    def open_engine_setup(self):
        from .engine_setup_dialog import EngineSetupDialog

        def make():
            dialog = EngineSetupDialog(self.iface.mainWindow(), self.use_engine_python)
            dialog.setup_finished.connect(self.setup_finished)
            return dialog

        return self._show("setup", make)

    def setup_finished(self, ok: bool, message: str) -> None:
        """Closing the set-up dialog hides it and the set-up goes on: its outcome, with the
        fix when it failed, then goes to the message bar (a failure stays until closed)."""
        dialog = self.dialogs.get("setup")
        if dialog is not None and dialog.isVisible():
            return  # the dialog shows it
        from qgis.core import Qgis

        level = Qgis.MessageLevel.Success if ok else Qgis.MessageLevel.Critical
        self.iface.messageBar().pushMessage("Text2Earth set-up", message, level=level,
                                            duration=10 if ok else 0)

    def open_model_dialog(self):
        from .model_dialog import ModelDialog

        return self._show("model", lambda: ModelDialog(self.iface.mainWindow(), self.use_model))

    def use_engine_python(self, python: str) -> None:
        self.manager.stop()
        self.manager.settings.python = python
        if self.dock is not None:
            self.dock.engine_settings.python_widget.setFilePath(python)
            self.dock.connect_engine()

    def use_model(self, model: str, cache: str) -> None:
        self.manager.stop()  # the engine reads the model and its cache when it starts
        self.manager.settings.model_cache = cache
        if model:
            self.manager.settings.model = model
            if self.dock is not None:
                self.dock.generate.model_edit.setText(model)
        if self.dock is not None:
            self.dock.connect_engine()

    def unload(self) -> None:
        for action in self.actions + self.menu_actions:
            self.iface.removePluginRasterMenu(MENU, action)
        for action in self.actions:
            self.iface.removeToolBarIcon(action)
        # Parented to the main window, they would outlive the plugin: one more set per reload.
        for action in self.actions + self.menu_actions:
            action.deleteLater()
        self.actions.clear()
        self.menu_actions.clear()
        for dialog in self.dialogs.values():
            dialog.close()
            dialog.deleteLater()
        self.dialogs.clear()
        if self.swipe is not None:
            self.swipe.unload()
            self.swipe = None
        if self.regenerate_action is not None:
            self.iface.removeCustomActionForLayerType(self.regenerate_action)
            self.regenerate_action.deleteLater()
            self.regenerate_action = None
        if self.dock is not None:
            self.dock.cleanup()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        for signal, slot in ((QgsApplication.instance().aboutToQuit, self.manager.stop),
                             (QgsProject.instance().layersAdded, self._offer_regenerate_on)):
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        self.manager.stop()
