"""The engine's layout rules, read from the source with ast (every import counts, also those
inside functions): no import cycles, layers that only look down, and the plugin reached only
through its declared stdlib contract."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module the file imports, as absolute names (relative ones resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def engine_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ENGINE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in imports_of(path) if m in files and m != name
                       and not name.startswith(m + ".")}  # a package's own __init__ is no edge
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_engine_has_no_import_cycles():
    assert find_cycle(engine_graph()) is None


# Which engine packages a package may import: each layer looks down only. quality (Git-RSCLIP:
# score, rank, label, evaluation) sits beside jobs' inputs: jobs rank candidates with it; batch
# (Ray) runs jobs, as the service does. commands (the CLI's subcommand modules) and cli, bench
# are the top: unconstrained downwards, and nothing below imports them.
ALLOWED = {
    "engine.geo": {"engine.errors", "engine.geo"},
    "engine.model": {"engine.errors", "engine.model"},
    "engine.quality": {"engine", "engine.errors", "engine.geo", "engine.model",
                       "engine.quality"},
    "engine.jobs": {"engine", "engine.errors", "engine.geo", "engine.model", "engine.quality",
                    "engine.jobs"},
    "engine.service": {"engine", "engine.errors", "engine.geo", "engine.model",
                       "engine.quality", "engine.jobs", "engine.service"},
    "engine.batch": {"engine", "engine.errors", "engine.geo", "engine.model", "engine.quality",
                     "engine.jobs", "engine.batch"},
}
TOP = ("engine.cli", "engine.bench", "engine.commands")


def layer_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_only_import_downwards(layer):
    graph = engine_graph()
    wrong = sorted(f"{m} -> {dep}" for m, deps in graph.items() if layer_of(m) == layer
                   for dep in deps if layer_of(dep) not in ALLOWED[layer])
    assert wrong == []


def test_every_engine_package_has_a_layer():
    # errors is the floor every layer may import.
    packages = {layer_of(m) for m in engine_graph() if m.count(".") >= 1} - {"engine.errors"}
    assert {p for p in packages if p not in ALLOWED and not p.startswith(TOP)} == set()


def test_nothing_in_the_engine_imports_the_cli_the_commands_or_the_bench():
    graph = engine_graph()
    wrong = sorted(f"{m} -> {dep}" for m, deps in graph.items()
                   if not m.startswith(TOP)
                   for dep in deps if dep.startswith(TOP))
    assert wrong == []


CONTRACT = "text2earth_qgis.core.contract"


def plugin_imports(path: Path) -> set[str]:
    """The plugin modules a file imports, down to the module (text2earth_qgis.core.contract.X)."""
    return {m for m in imports_of(path) if m.startswith("text2earth_qgis")}


def outside_contract(modules: set[str]) -> set[str]:
    """The imported plugin names that are neither the contract's modules nor the packages
    above them (importing a package's __init__ is no reach into its other modules)."""
    above = {"text2earth_qgis", "text2earth_qgis.core", CONTRACT}
    return {m for m in modules if m not in above and not m.startswith(CONTRACT + ".")}


def test_engine_reaches_the_plugin_only_through_its_stdlib_contract():
    # The bench measures the service through the plugin's own client: that is its point.
    runtime = [p for p in ENGINE.rglob("*.py") if "bench" not in p.relative_to(ENGINE).parts]
    wrong = sorted(f"{module_name(p)} -> {m}" for p in runtime
                   for m in outside_contract(plugin_imports(p)))
    assert wrong == []


def test_the_contract_rule_names_a_reach_past_it():
    assert outside_contract({f"{CONTRACT}.scale", f"{CONTRACT}.scale.MIN_LEVEL",
                             "text2earth_qgis.core"}) == set()
    assert outside_contract({"text2earth_qgis.core.service.client",
                             "text2earth_qgis.core.job_spec"}) == {
        "text2earth_qgis.core.service.client", "text2earth_qgis.core.job_spec"}


def test_the_contract_modules_import_only_the_standard_library():
    import sys

    contract = ROOT / "text2earth_qgis" / "core" / "contract"
    for path in contract.glob("*.py"):
        outside = {m for m in imports_of(path) if m.split(".")[0] not in sys.stdlib_module_names
                   and m != "__future__" and not m.startswith("__future__.")}
        assert outside_contract(outside) == set() and all(
            m.startswith("text2earth_qgis") for m in outside), (path.name, outside)
