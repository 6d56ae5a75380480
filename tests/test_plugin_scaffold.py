"""The plugin side: stdlib + PyQGIS only, loadable in QGIS, sharing the engine's scale math."""

from __future__ import annotations

import ast
import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "text2earth_qgis"
ALLOWED_THIRD_PARTY = {"qgis"}


def imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_plugin_imports_only_stdlib_and_qgis():
    stdlib = set(sys.stdlib_module_names)
    offenders = {}
    for path in PLUGIN.rglob("*.py"):
        foreign = imported_top_modules(path) - stdlib - ALLOWED_THIRD_PARTY
        if foreign:
            offenders[str(path.relative_to(ROOT))] = sorted(foreign)
    assert offenders == {}


def test_core_is_stdlib_only_without_qgis():
    """The shared core must import in the engine's venv even where QGIS is absent."""
    stdlib = set(sys.stdlib_module_names) | {"text2earth_qgis"}
    for path in (PLUGIN / "core").rglob("*.py"):
        assert imported_top_modules(path) <= stdlib, path


def test_engine_uses_the_plugin_scale_module():
    import engine.geo.grid
    import text2earth_qgis.core.contract.scale as shared

    assert engine.geo.grid.scale is shared  # one implementation, not two copies that drift


def test_metadata_has_what_the_plugin_manager_needs():
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(ROOT / "metadata.txt")
    general = meta["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                "email", "repository", "tracker", "homepage", "changelog", "tags"):
        assert general.get(key), key
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["qgisMaximumVersion"] == "3.99"  # only as high as tested
    assert general["supportsQt6"] == "True"
    assert general["changelog"].startswith(general["version"] + " ")
    assert (PLUGIN / general["icon"]).is_file()


def test_plugin_loads_in_qgis_without_heavy_imports():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("plugin_probe.py"))],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["actions"] == ["Text2Earth"]
    assert report["after_unload"] == 0
    assert report["heavy"] == []  # what the plugin imported; QGIS's own imports aside
    # Two load/unload cycles leave the main window with the objects it had: no QAction or
    # dock piles up per reload.
    first, *after = report["window_objects"]
    assert after == [first, first], report["window_objects"]


def test_plugin_zip_carries_an_installable_engine_source(tmp_path):
    """A user of the zip has no checkout: Set up engine finds the engine's source and pinned
    requirements inside the plugin, adds the plugin's own core (the zip has no second copy),
    and pip can build the engine from them."""
    import zipfile

    from text2earth_qgis.core.setup.venv_setup import (
        buildable_engine_source,
        checkout_root,
        read_requirements,
    )

    built = subprocess.run(["make", "package"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert built.returncode == 0, built.stderr
    with zipfile.ZipFile(ROOT / "dist" / "text2earth_qgis.zip") as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path)
    assert "text2earth_qgis/engine_source/engine/cli.py" in names
    assert "text2earth_qgis/engine_source/engine/model/tiny_checkpoint.py" in names  # demo
    assert "text2earth_qgis/LICENSE" in names
    assert not any(n.startswith("text2earth_qgis/engine_source/text2earth_qgis/") for n in names)
    assert not any(n.startswith("text2earth_qgis/engine_source/engine/bench/") for n in names)
    plugin = tmp_path / "text2earth_qgis"
    root = checkout_root(plugin)
    assert root == plugin / "engine_source"
    pins = read_requirements(root / "requirements.txt")
    assert any(p.startswith("torch==") for p in pins)
    source = buildable_engine_source(root, tmp_path / "build", plugin_dir=plugin)
    contract = source / "text2earth_qgis" / "core" / "contract"
    assert source != root and (contract / "scale.py").is_file()
    wheel = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "wheels"), str(source)],
        capture_output=True, text=True, timeout=300)
    assert wheel.returncode == 0, wheel.stderr
    with zipfile.ZipFile(next((tmp_path / "wheels").glob("text2earth_engine-*.whl"))) as whl:
        members = whl.namelist()
    assert "engine/cli.py" in members and "text2earth_qgis/core/contract/scale.py" in members
    assert not any(m.startswith("text2earth_qgis/dock") for m in members)  # no plugin UI
    # A checkout is built as it is.
    assert buildable_engine_source(ROOT, tmp_path / "unused") == ROOT


def test_make_validate_passes_the_repositorys_checks():
    """LICENSE, metadata, no duplicates, Bandit and detect-secrets on the zip itself."""
    # --no-print-directory: under `make test` this make is a sub-make, which would otherwise
    # print "Leaving directory" after the summary.
    result = subprocess.run(["make", "--no-print-directory", "validate"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = next(line for line in reversed(result.stdout.splitlines())
                   if line.startswith("dist/text2earth_qgis.zip:"))
    assert summary.startswith("dist/text2earth_qgis.zip: 0 problem(s)"), summary
    assert "PROBLEM" not in result.stdout
