"""The "Copy diagnostics" text for a bug report: versions, device, paths, the last log lines.
Pure: the facts come in as a dict (the dock gathers them); secrets never go out."""

from __future__ import annotations

import json
import platform
import re
import sys

REDACTED = "<redacted>"


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    # Whatever else looks like a bearer token or a hub token.
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1" + REDACTED, text)
    return re.sub(r"\bhf_[A-Za-z0-9]{20,}\b", REDACTED, text)


def _line(label: str, value) -> str:
    if value is None or value == "":
        value = "-"
    elif isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    return f"{label}: {value}"


# (label, key) rows, in the order a reader of a bug report wants them.
QGIS_FACTS = [("plugin", "plugin_version"), ("QGIS", "qgis_version"),
              ("QGIS Python", "qgis_python"), ("system", "platform")]
ENGINE_FACTS = [("engine state", "engine_state"), ("engine message", "engine_message"),
                ("engine Python", "engine_python"), ("engine URL", "engine_url")]
DEVICE_FACTS = [("GPU used", "gpu_used"), ("GPU note", "reason"),
                ("torch CUDA", "torch_cuda"), ("NVIDIA driver", "nvidia_driver")]
SETUP_FACTS = [("model setting", "model"), ("model cache", "model_cache"),
               ("set-up log", "setup_log"), ("set-up stamps", "setup_stamps")]


def diagnostics_text(facts: dict, secrets: list[str] | None = None) -> str:
    """One plain-text block; unknown facts are shown as '-', never dropped silently."""
    health = facts.get("health") or {}
    device = health.get("device") or {}
    report = health.get("device_report") or {}
    models = [{k: m.get(k) for k in ("model_id", "device", "dtype", "pipeline_check")}
              for m in health.get("models") or []]

    def rows(table, source):
        return [_line(label, source.get(key)) for label, key in table]

    lines = (
        ["Text2Earth diagnostics", *rows(QGIS_FACTS, facts), "", *rows(ENGINE_FACTS, facts),
         _line("engine version", health.get("version")),
         _line("device", f"{device.get('type', '-')} {device.get('name', '')}".strip()),
         *rows(DEVICE_FACTS, report), _line("models", models),
         _line("model error", health.get("model_error")), "", *rows(SETUP_FACTS, facts), "",
         "last engine log lines:", (facts.get("log_tail") or "-").rstrip()]
    )
    return redact("\n".join(lines) + "\n", list(secrets or []))


def engine_facts(manager) -> dict:
    """What the engine manager knows (no Qt): state, paths, last health, log lines."""
    from pathlib import Path

    from .service.engine_manager import find_engine_python
    from .setup.venv_setup import STAMP_FILE

    settings = manager.settings
    python = find_engine_python(settings.python)
    stamps = None
    if python:
        stamp = Path(python).parent.parent / STAMP_FILE
        try:
            stamps = json.loads(stamp.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stamps = None
    return {
        "qgis_python": sys.version.split()[0],
        "platform": platform.platform(),
        "engine_state": manager.state,
        "engine_message": manager.message,
        "engine_python": python,
        "engine_url": manager.client.url if manager.client else settings.url,
        "health": getattr(manager, "health", {}),
        "model": settings.model,
        "model_cache": settings.model_cache,
        "setup_stamps": stamps,
        "setup_log": setup_log_of(python),
        "log_tail": manager.log_tail(),
    }


def setup_log_of(python: str | None) -> str | None:
    """The set-up log next to the venv the engine's Python belongs to, if there is one."""
    from pathlib import Path

    if not python:
        return None
    venv = Path(python).parent.parent
    log = venv.with_name(venv.name + "-setup.log")
    return str(log) if log.is_file() else None
