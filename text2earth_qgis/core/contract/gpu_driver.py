"""The NVIDIA driver's version, read from nvidia-smi: the set-up chooses a torch build by it,
and the engine's device report says why a GPU is not used. Stdlib only (part of the contract
the engine imports)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess  # nosec B404 - nvidia-smi with a list argv, never a shell
import sys
from pathlib import Path

from .child_process import NO_WINDOW


def parse_nvidia_smi(output: str) -> str | None:
    """The driver version from `nvidia-smi --query-gpu=driver_version --format=csv,noheader`."""
    for line in output.splitlines():
        match = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?\s*$", line)
        if match:
            return line.strip()
    return None


def nvidia_smi_path(platform: str = sys.platform, which=shutil.which,
                    env: dict | None = None) -> str | None:
    """nvidia-smi: on PATH, else where Windows drivers put it (System32 since the DCH
    drivers, NVSMI under Program Files before them; QGIS's PATH may have neither)."""
    smi = which("nvidia-smi")
    if smi is None and platform == "win32":
        env = os.environ if env is None else env
        for candidate in (
                Path(env.get("SystemRoot", "C:/Windows")) / "System32" / "nvidia-smi.exe",
                Path(env.get("ProgramFiles", "C:/Program Files")) / "NVIDIA Corporation"
                / "NVSMI" / "nvidia-smi.exe"):
            if candidate.is_file():
                return str(candidate)
    return smi


def detect_nvidia_driver(timeout: float = 10.0) -> str | None:
    """The NVIDIA driver version, or None when there is no working driver."""
    smi = nvidia_smi_path()
    if smi is None:
        return None
    try:
        out = subprocess.run(  # nosec B603 - list argv, no shell
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=timeout,
            creationflags=NO_WINDOW)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else None
