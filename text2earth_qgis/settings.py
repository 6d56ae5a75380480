"""The plugin's settings (QgsSettings) as the engine manager's EngineSettings."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsSettings

from .core.service.engine_manager import EngineSettings

PREFIX = "text2earth/"


def plugin_data_dir() -> Path:
    folder = Path(QgsApplication.qgisSettingsDirPath()) / "text2earth"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def engine_settings() -> EngineSettings:
    s = QgsSettings()
    data = plugin_data_dir()
    return EngineSettings(
        python=s.value(PREFIX + "engine_python", "", type=str) or None,
        url=s.value(PREFIX + "engine_url", "", type=str) or None,
        token_file=s.value(PREFIX + "token_file", "", type=str) or str(data / "token"),
        model=s.value(PREFIX + "model", "", type=str) or None,
        device=s.value(PREFIX + "device", "", type=str) or None,
        staging_dir=str(data / "staging"),
        demo_fallback=s.value(PREFIX + "demo_fallback", True, type=bool),
        port=s.value(PREFIX + "port", 0, type=int),
        record_file=str(data / "service.json"),
        model_cache=s.value(PREFIX + "model_cache", "", type=str),
    )
