"""The dock's engine tools row (Set up engine, Download model, Copy diagnostics) and the
diagnostics text with what only QGIS knows (its version, the plugin's) added."""

from __future__ import annotations

import configparser
from pathlib import Path

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QPushButton, QVBoxLayout, QWidget

from .core.diagnostics import diagnostics_text, engine_facts
from .core.service.client import read_token
from .core.service.engine_manager import EngineManager


def plugin_version() -> str:
    meta = configparser.ConfigParser()
    meta.read(Path(__file__).resolve().parent / "metadata.txt")
    return meta.get("general", "version", fallback="?")


def diagnostics_for(manager: EngineManager) -> str:
    facts = engine_facts(manager) | {"plugin_version": plugin_version(),
                                     "qgis_version": Qgis.version()}
    return diagnostics_text(facts, secrets=[read_token(manager.settings.token_file) or ""])


def engine_tools_row(dock) -> QWidget:
    row = QWidget()
    layout = QVBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for text, slot in (("Set up engine…", dock.setup_requested.emit),
                       ("Download model…", dock.models_requested.emit),
                       ("Copy diagnostics", dock.copy_diagnostics)):
        button = QPushButton(text)
        button.clicked.connect(lambda checked=False, slot=slot: slot())
        layout.addWidget(button)
    return row
