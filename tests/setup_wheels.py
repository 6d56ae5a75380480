"""A small requirement set for engine set-up tests: wheels written here by hand (a wheel is
a zip with a dist-info; PEP 427), so pip installs them offline with --no-index.

`torch` and `text2earth-engine` stand in for the real ones: a `torch` module that reports a
CPU build, and an `engine` package with `engine.cli`, which is what the set-up's check imports.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

FAKE_TORCH = (
    "__version__ = '2.0.0'\n"
    "class version:\n    cuda = None\n"
    "class cuda:\n    @staticmethod\n    def is_available():\n        return False\n"
)
REQUIREMENTS = ["torch==2.0.0", "tinydep==1.0"]


def write_wheel(folder: Path, name: str, version: str, files: dict[str, str],
                requires: tuple[str, ...] = ()) -> Path:
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires))
    contents[f"{info}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: text2earth-tests\n"
                                 "Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = []
    for path, text in contents.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
    return wheel


def write_requirement_set(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_wheel(folder, "torch", "2.0.0", {"torch.py": FAKE_TORCH})
    write_wheel(folder, "tinydep", "1.0", {"tinydep.py": "VALUE = 42\n"})
    write_wheel(folder, "text2earth-engine", "0.1.0", {
        "engine/__init__.py": "",
        "engine/cli.py": "import tinydep\nassert tinydep.VALUE == 42\n",
    }, requires=("tinydep",))
    return folder


def isolated_pip_env() -> dict:
    """This machine's pip.conf and PIP_* settings must not leak into the tests' pip runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_NO_CACHE_DIR"] = "1"
    return env
