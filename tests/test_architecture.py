"""The engine's layout rules, read from the source with ast (every import counts, also those
inside functions): no import cycles, layers that only look down, and the plugin reached only
through its declared stdlib contract."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


DYNAMIC_IMPORTS = ("import_module", "__import__")


def dynamic_import(node: ast.AST) -> ast.expr | None:
    """The argument of ``importlib.import_module(...)`` / ``__import__(...)``, else None."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return node.args[0] if name in DYNAMIC_IMPORTS else None


def imports_of(path: Path) -> set[str]:
    """Every module the file imports, as absolute names (relative ones resolved); an
    import_module("engine.x") with a constant name counts as ``import engine.x``."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    tree = ast.parse(source)
    package = module if is_package else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if (target := dynamic_import(node)) is not None:
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                found.add(target.value)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


Sources = dict[str, tuple[str, bool]]  # module -> (its source, whether it is a package)


@functools.cache
def engine_sources() -> Sources:
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in ENGINE.rglob("*.py")}


def graph_of(sources: Sources) -> dict[str, set[str]]:
    graph = {}
    for name, (source, is_package) in sources.items():
        graph[name] = {m for m in imports_in(source, name, is_package) if m in sources
                       and m != name
                       and not name.startswith(m + ".")}  # a package's own __init__ is no edge
    return graph


def engine_graph() -> dict[str, set[str]]:
    return graph_of(engine_sources())


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
# score, rank, label, evaluation) sits beside jobs' inputs: jobs rank candidates with it; scenes
# (windows, store, outpaint, joint, cascade) run below jobs, on geo and model; batch
# (Ray) runs jobs, as the service does. commands (the CLI's subcommand modules) and cli, bench
# are the top: unconstrained downwards, and nothing below imports them.
ALLOWED = {
    "engine.geo": {"engine.errors", "engine.geo"},
    "engine.model": {"engine.errors", "engine.model"},
    "engine.quality": {"engine", "engine.errors", "engine.geo", "engine.model",
                       "engine.quality"},
    "engine.scenes": {"engine", "engine.errors", "engine.geo", "engine.model", "engine.scenes"},
    "engine.jobs": {"engine", "engine.errors", "engine.geo", "engine.model", "engine.quality",
                    "engine.scenes", "engine.jobs"},
    "engine.service": {"engine", "engine.errors", "engine.geo", "engine.model",
                       "engine.quality", "engine.scenes", "engine.jobs", "engine.service"},
    "engine.batch": {"engine", "engine.errors", "engine.geo", "engine.model", "engine.quality",
                     "engine.scenes", "engine.jobs", "engine.batch"},
}
TOP = ("engine.cli", "engine.bench", "engine.commands")


def layer_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def layer_violations(graph: dict[str, set[str]], layer: str) -> list[str]:
    return sorted(f"{m} -> {dep}" for m, deps in graph.items() if layer_of(m) == layer
                  for dep in deps if layer_of(dep) not in ALLOWED[layer])


def top_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of the CLI, the commands or the bench from below them."""
    return sorted(f"{m} -> {dep}" for m, deps in graph.items() if not m.startswith(TOP)
                  for dep in deps if dep.startswith(TOP))


def private_imports(sources: Sources) -> list[str]:
    """Another module's private names (``_x``), imported or reached as ``module._x``: a
    helper two modules share is public, in the module that owns its idea."""
    wrong = []
    for name, (source, is_package) in sources.items():
        package = name if is_package else name.rsplit(".", 1)[0]
        modules: dict[str, str] = {}  # local name -> the engine module it is bound to
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in sources:
                        modules[alias.asname or alias.name] = f"{base}.{alias.name}"
                    elif is_private(alias.name) and base != name:
                        wrong.append(f"{name} -> {base}.{alias.name}")
            elif isinstance(node, ast.Import):
                modules.update({a.asname: a.name for a in node.names if a.asname})
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and is_private(node.attr) \
                    and isinstance(node.value, ast.Name) and node.value.id in modules \
                    and modules[node.value.id] != name:
                wrong.append(f"{name} -> {modules[node.value.id]}.{node.attr}")
    return sorted(wrong)


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def unseen_imports(sources: Sources) -> list[str]:
    """import_module() of a name built at run time: an edge no rule here could check."""
    return sorted(f"{name} -> import_module({ast.unparse(arg)})"
                  for name, (source, _) in sources.items()
                  for node in ast.walk(ast.parse(source))
                  if (arg := dynamic_import(node)) is not None
                  and not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_only_import_downwards(layer):
    assert layer_violations(engine_graph(), layer) == []


def test_every_engine_package_has_a_layer():
    # errors is the floor every layer may import.
    packages = {layer_of(m) for m in engine_graph() if m.count(".") >= 1} - {"engine.errors"}
    assert {p for p in packages if p not in ALLOWED and not p.startswith(TOP)} == set()


def test_nothing_in_the_engine_imports_the_cli_the_commands_or_the_bench():
    assert top_violations(engine_graph()) == []


def test_no_module_uses_another_modules_private_names():
    assert private_imports(engine_sources()) == []


def test_every_dynamic_import_names_its_module():
    assert unseen_imports(engine_sources()) == []


# Each rule above, fed a planted violation, names it (a rule that cannot fail checks nothing).
PLANTED: Sources = {
    "engine": ("", True),
    "engine.cli": ("from engine.commands import restyle\n", False),
    "engine.commands": ("", True),
    "engine.commands.restyle": (
        "def add_parser(sub):\n    from engine import cli\n    cli._raster_job_arguments(sub)\n",
        False),
    "engine.geo": ("", True),
    "engine.geo.grid": ("import importlib\n"
                        "def f():\n    importlib.import_module('engine.jobs.generate')\n", False),
    "engine.jobs": ("", True),
    "engine.jobs.generate": ("from engine.geo.grid import build_grid\n"
                             "from engine.jobs.scene import _read\n", False),
    "engine.jobs.scene": ("from . import generate as g\nx = g._private\n"
                          "y = __import__(NAME)\n_read = 1\n", False),
    "engine.service": ("", True),
    "engine.service.app": ("from engine.cli import main\n", False),
}


def test_the_rules_catch_planted_violations():
    graph = graph_of(PLANTED)
    # Seen through import_module with a constant name: a cycle and a layer broken.
    assert find_cycle(graph) == ["engine.cli", "engine.commands.restyle", "engine.cli"]
    assert "engine.jobs.generate" in graph["engine.geo.grid"]
    assert layer_violations(graph, "engine.geo") == ["engine.geo.grid -> engine.jobs.generate"]
    assert top_violations(graph) == ["engine.service.app -> engine.cli"]
    assert private_imports(PLANTED) == [
        "engine.commands.restyle -> engine.cli._raster_job_arguments",
        "engine.jobs.generate -> engine.jobs.scene._read",
        "engine.jobs.scene -> engine.jobs.generate._private"]
    assert unseen_imports(PLANTED) == ["engine.jobs.scene -> import_module(NAME)"]


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


def contract_violations(sources: Sources) -> list[str]:
    """What the contract's modules import beyond the standard library and the contract:
    the engine imports them, so they must import nothing else of the plugin, nor any
    third-party package."""
    import sys

    wrong = []
    for name, (source, is_package) in sources.items():
        for m in sorted(imports_in(source, name, is_package)):
            if m.split(".")[0] in sys.stdlib_module_names or m.split(".")[0] == "__future__":
                continue
            if not m.startswith("text2earth_qgis") or outside_contract({m}):
                wrong.append(f"{name} -> {m}")
    return wrong


def test_the_contract_modules_import_only_the_standard_library():
    contract = ROOT / "text2earth_qgis" / "core" / "contract"
    sources = {module_name(p): (p.read_text(), p.name == "__init__.py")
               for p in contract.glob("*.py")}
    assert len(sources) > 3 and contract_violations(sources) == []


def test_the_contract_rule_catches_planted_violations():
    planted = {f"{CONTRACT}.scale": ("import math\nfrom . import tiles\n"
                                     "def f():\n    from ..job_spec import JobSpec\n"
                                     "    import numpy\n", False)}
    assert contract_violations(planted) == [
        "text2earth_qgis.core.contract.scale -> numpy",
        "text2earth_qgis.core.contract.scale -> text2earth_qgis.core.job_spec",
        "text2earth_qgis.core.contract.scale -> text2earth_qgis.core.job_spec.JobSpec"]
