"""tools/validate_package.py refuses what the QGIS plugin repository refuses: judged on zips
made from `make package`'s with one fault each."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "validate_package.py"


@pytest.fixture(scope="module")
def good_zip():
    built = subprocess.run(["make", "package"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert built.returncode == 0, built.stderr
    return ROOT / "dist" / "text2earth_qgis.zip"


def variant(good: Path, out: Path, drop=(), add=None, replace=None) -> Path:
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            if item.filename in drop:
                continue
            data = src.read(item.filename)
            if replace and item.filename in replace:
                data = replace[item.filename](data.decode()).encode()
            dst.writestr(item, data)
        for name, text in (add or {}).items():
            dst.writestr(name, text)
    return out


def validate(path: Path, *extra: str) -> tuple[int, str]:
    result = subprocess.run([sys.executable, str(TOOL), str(path), *extra],
                            capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout


def test_a_zip_without_license_or_with_a_secret_or_pyqt5_code_is_refused(good_zip, tmp_path):
    bad = variant(good_zip, tmp_path / "bad.zip", drop={"text2earth_qgis/LICENSE"}, add={
        "text2earth_qgis/leak.py": 'AWS_KEY = "AKIAIOSFODNN7EXAMPLE"\n',
        "text2earth_qgis/old_qt.py": "from qgis.PyQt.QtCore import Qt\nALIGN = Qt.AlignLeft\n",
        "text2earth_qgis/engine_source/text2earth_qgis/core/contract/scale.py": "",
        "text2earth_qgis/shell.py": "import subprocess\nsubprocess.call('ls', shell=True)\n",
    })
    code, out = validate(bad)
    assert code == 1
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM:")]
    assert any("text2earth_qgis/LICENSE is missing" in p for p in problems)
    assert any(p.startswith("PROBLEM: detect-secrets text2earth_qgis/leak.py:1") for p in problems)
    assert any("qt6 text2earth_qgis/old_qt.py:2: unscoped Qt enum" in p for p in problems)
    assert any("a second copy of the plugin's core" in p for p in problems)
    assert any(p.startswith("PROBLEM: bandit B602 text2earth_qgis/shell.py") for p in problems)


def test_release_mode_refuses_placeholder_urls_and_the_zip_is_bandit_clean(good_zip):
    code, out = validate(good_zip, "--release")
    assert code == 1
    assert "PROBLEM: release: homepage is a placeholder" in out
    assert "bandit" not in out  # the plugin and the engine it carries: no finding, none pending
    code, out = validate(good_zip)
    assert code == 0, out
    assert "0 pending engine finding(s)" in out


def test_metadata_without_changelog_entry_or_qt6_flag_is_refused(good_zip, tmp_path):
    def strip(text):
        return text.replace("supportsQt6=True\n", "").replace("changelog=0.1.0", "changelog=0.0.9")

    bad = variant(good_zip, tmp_path / "meta.zip",
                  replace={"text2earth_qgis/metadata.txt": strip})
    code, out = validate(bad)
    assert code == 1
    assert "supportsQt6 must be True" in out
    assert "the changelog has no entry for 0.1.0" in out
