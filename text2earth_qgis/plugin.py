"""Plugin entry: menu and toolbar wiring only. PyQGIS + stdlib; the model runs in the engine."""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMessageBox

from .core.scale import LEVELS, nominal_resolution

MENU = "&Text2Earth"


class Text2EarthPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: list[QAction] = []

    def initGui(self) -> None:  # noqa: N802 - QGIS's name
        icon = QIcon(str(Path(__file__).with_name("icon.svg")))
        action = QAction(icon, "About Text2Earth", self.iface.mainWindow())
        action.triggered.connect(self.show_about)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.actions.append(action)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
        self.actions.clear()

    def show_about(self) -> None:
        levels = ", ".join(f"{lv}: {nominal_resolution(lv):g} m" for lv in LEVELS)
        QMessageBox.information(
            self.iface.mainWindow(),
            "Text2Earth",
            "Text2Earth generates synthetic (AI-made) remote-sensing imagery.\n\n"
            "The engine runs outside QGIS, from its own Python environment:\n"
            "  text2earth generate --bbox ... --crs ... --prompt ... --out scene.tif\n"
            "then add the GeoTIFF as a raster layer.\n\n"
            f"Resolution levels (nominal m/px): {levels}",
        )
