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


def diagnostics_text(facts: dict, secrets: list[str] | None = None) -> str:
    """One plain-text block; unknown facts are shown as '-', never dropped silently."""
    health = facts.get("health") or {}
    device = health.get("device") or {}
    report = health.get("device_report") or {}
    models = health.get("models") or []
    lines = [
        "Text2Earth diagnostics",
        _line("plugin", facts.get("plugin_version")),
        _line("QGIS", facts.get("qgis_version")),
        _line("QGIS Python", facts.get("qgis_python")),
        _line("system", facts.get("platform")),
        "",
        _line("engine state", facts.get("engine_state")),
        _line("engine message", facts.get("engine_message")),
        _line("engine Python", facts.get("engine_python")),
        _line("engine URL", facts.get("engine_url")),
        _line("engine version", health.get("version")),
        _line("device", f"{device.get('type', '-')} {device.get('name', '')}".strip()),
        _line("GPU used", report.get("gpu_used")),
        _line("GPU note", report.get("reason")),
        _line("torch CUDA", report.get("torch_cuda")),
        _line("NVIDIA driver", report.get("nvidia_driver")),
        _line("models", [{k: m.get(k) for k in ("model_id", "device", "dtype", "pipeline_check")}
                         for m in models]),
        _line("model error", health.get("model_error")),
        "",
        _line("model setting", facts.get("model")),
        _line("model cache", facts.get("model_cache")),
        _line("set-up log", facts.get("setup_log")),
        _line("set-up stamps", facts.get("setup_stamps")),
        "",
        "last engine log lines:",
        (facts.get("log_tail") or "-").rstrip(),
    ]
    return redact("\n".join(lines) + "\n", list(secrets or []))


def engine_facts(manager) -> dict:
    """What the engine manager knows (no Qt): state, paths, last health, log lines."""
    from pathlib import Path

    from .engine_manager import find_engine_python
    from .venv_setup import STAMP_FILE

    settings = manager.settings
    python = find_engine_python(settings.python)
    stamps = None
    if python:
        stamp = Path(python).parent.parent / STAMP_FILE
        try:
            stamps = json.loads(stamp.read_text())
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
