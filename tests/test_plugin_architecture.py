"""The plugin's layout rules, read from the source with ast (every import counts, also those
inside functions), as tests/test_architecture.py does for the engine:

- core/ is the standard library only: the engine imports part of it, and the plugin's logic
  is tested there without Qt;
- nothing in the plugin imports torch, numpy, the engine or any other third-party package but
  QGIS (its Python is QGIS's own: a missing torch or a CUDA crash must never reach it);
- the QGIS-side logic (settings, layers, rendering, geometry, tasks, forms) imports no widget,
  and Processing imports no widget either (it runs without the dock, also in qgis_process);
- no import cycles.
"""

from __future__ import annotations

import sys
from pathlib import Path

from test_architecture import find_cycle, imports_of, module_name

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "text2earth_qgis"
PACKAGE = "text2earth_qgis"

# Modules that show or collect something: the top layer, imported by nothing below it.
WIDGETS = {"dock", "generate_panel", "edit_panel", "history_panel", "engine_panel",
           "engine_setup_dialog", "model_dialog", "engine_tools", "run_view", "form_layout",
           "sketch_tool", "swipe_tool", "variation_strip", "start_layers", "sampling_widgets",
           "plugin"}
# Logic that needs QGIS (layers, rendering, geometry, tasks) but shows nothing.
QGIS_LOGIC = {"settings", "qgis_compat", "qgis_geometry", "layers", "layer_render",
              "init_render", "tasks"}
# Plain Python logic outside core/: stdlib and core only, like core.
PURE = {"forms"}
QT_WIDGET_MODULES = ("qgis.PyQt.QtWidgets", "qgis.gui", "PyQt5.QtWidgets", "PyQt6.QtWidgets")


def plugin_files() -> dict[str, Path]:
    return {module_name(p): p for p in PLUGIN.rglob("*.py") if "engine_source" not in p.parts}


def part_of(module: str) -> str:
    """'text2earth_qgis.core.contract.scale' -> 'core'; 'text2earth_qgis.dock' -> 'dock'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def plugin_graph() -> dict[str, set[str]]:
    files = plugin_files()
    return {name: {m for m in imports_of(path) if m in files and m != name
                   and not name.startswith(m + ".")} for name, path in files.items()}


def outside_imports(path: Path) -> set[str]:
    return {m for m in imports_of(path) if m.split(".")[0] not in sys.stdlib_module_names
            and m.split(".")[0] not in ("__future__", PACKAGE)}


def pure_violations(files: dict[str, Path]) -> list[str]:
    """core/ and the pure modules: nothing outside the standard library and core."""
    wrong = []
    for name, path in files.items():
        if part_of(name) not in {"core", *PURE}:
            continue
        wrong += [f"{name} -> {m}" for m in sorted(outside_imports(path))]
        wrong += [f"{name} -> {m}" for m in sorted(imports_of(path))
                  if m.startswith(PACKAGE + ".") and part_of(m) != "core"]
    return wrong


def third_party_violations(files: dict[str, Path]) -> list[str]:
    return sorted(f"{name} -> {m}" for name, path in files.items()
                  for m in outside_imports(path) if m.split(".")[0] not in ("qgis", "osgeo"))


def widget_violations(files: dict[str, Path]) -> list[str]:
    """Logic and Processing importing a widget module or Qt's widgets."""
    wrong = []
    for name, path in files.items():
        if part_of(name) in WIDGETS | {""}:  # "": classFactory, QGIS's entry into plugin.py
            continue
        for m in sorted(imports_of(path)):
            if (m.startswith(PACKAGE + ".") and part_of(m) in WIDGETS) \
                    or m.startswith(QT_WIDGET_MODULES):
                wrong.append(f"{name} -> {m}")
    return sorted(wrong)


def test_the_plugin_has_no_import_cycles():
    assert find_cycle(plugin_graph()) is None


def test_every_plugin_module_has_a_layer():
    unplaced = {part_of(m) for m in plugin_files()} - WIDGETS - QGIS_LOGIC - PURE - {
        "", "core", "processing"}
    assert unplaced == set(), "place new modules in a layer of this test"


def test_core_and_pure_logic_are_the_standard_library_and_core_only():
    assert pure_violations(plugin_files()) == []


def test_the_plugin_imports_nothing_but_qgis_and_the_standard_library():
    assert third_party_violations(plugin_files()) == []


def test_logic_and_processing_import_no_widget():
    assert widget_violations(plugin_files()) == []


def test_the_rules_catch_planted_violations(tmp_path, monkeypatch):
    """Imports hidden inside functions are seen, and each rule names its culprit."""
    import test_architecture

    monkeypatch.setattr(test_architecture, "ROOT", tmp_path)
    package = tmp_path / PACKAGE
    (package / "core").mkdir(parents=True)
    (package / "processing").mkdir()
    planted = {
        "core/planted.py": "def f():\n    import torch\n    from ..dock import Dock\n",
        "processing/algo.py": "from qgis.PyQt.QtWidgets import QDialog\n",
        "layers.py": "def g():\n    from .generate_panel import GeneratePanel\n",
    }
    for relative, text in planted.items():
        (package / relative).write_text(text)
    files = {module_name(p): p for p in package.rglob("*.py")}
    assert pure_violations(files) == ["text2earth_qgis.core.planted -> torch",
                                      "text2earth_qgis.core.planted -> text2earth_qgis.dock",
                                      "text2earth_qgis.core.planted -> "
                                      "text2earth_qgis.dock.Dock"]
    assert third_party_violations(files) == ["text2earth_qgis.core.planted -> torch"]
    assert widget_violations(files) == [
        "text2earth_qgis.core.planted -> text2earth_qgis.dock",
        "text2earth_qgis.core.planted -> text2earth_qgis.dock.Dock",
        "text2earth_qgis.layers -> text2earth_qgis.generate_panel",
        "text2earth_qgis.layers -> text2earth_qgis.generate_panel.GeneratePanel",
        "text2earth_qgis.processing.algo -> qgis.PyQt.QtWidgets",
        "text2earth_qgis.processing.algo -> qgis.PyQt.QtWidgets.QDialog"]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
