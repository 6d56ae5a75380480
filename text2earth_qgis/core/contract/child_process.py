"""How the plugin starts the engine's Python and the tools it asks (nvidia-smi): the same on
every system. Stdlib only.

QGIS runs its own Python and sets PYTHONHOME / PYTHONPATH (Windows, macOS) or a venv
launcher variable (macOS) for it: the engine's venv must inherit none of them. Its output is
read back as UTF-8 whatever the Windows code page (paths like C:\\Users\\Jürgen), and on
Windows no console window flashes up.
"""

from __future__ import annotations

import os
import subprocess  # nosec B404 - only for the flag below

NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # 0 off Windows
QGIS_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV",
                         "__PYVENV_LAUNCHER__")


def clean_env(base: dict | None = None, extra: dict | None = None) -> dict:
    """The environment for the engine's Python: ``base`` (os.environ) less QGIS's Python
    variables, unbuffered UTF-8 output, then ``extra``."""
    env = dict(os.environ if base is None else base)
    for key in QGIS_PYTHON_VARIABLES:
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra or {})
    return env
