"""The Text2Earth Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..core.service.engine_manager import EngineManager
from .batch_algorithm import GenerateBatchAlgorithm
from .edit_algorithm import EditRasterAlgorithm
from .generate_algorithm import GenerateSceneAlgorithm
from .label_algorithm import LabelRasterAlgorithm
from .restyle_algorithm import RestyleRasterAlgorithm


class Text2EarthProvider(QgsProcessingProvider):
    def __init__(self, manager: EngineManager) -> None:
        super().__init__()
        self.manager = manager

    def id(self) -> str:
        return "text2earth"

    def name(self) -> str:
        return "Text2Earth"

    def icon(self) -> QIcon:
        return QIcon(str(Path(__file__).resolve().parents[1] / "resources" / "icon.svg"))

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS's name
        self.addAlgorithm(GenerateSceneAlgorithm(self.manager))
        self.addAlgorithm(EditRasterAlgorithm(self.manager))
        self.addAlgorithm(RestyleRasterAlgorithm(self.manager))
        self.addAlgorithm(GenerateBatchAlgorithm(self.manager))
        self.addAlgorithm(LabelRasterAlgorithm(self.manager))
