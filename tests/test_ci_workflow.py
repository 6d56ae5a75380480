"""The CI workflow for ubuntu / windows / macos runners: the linter accepts it and rejects a
broken copy, and the tests it runs (tests/portable_tests.txt) exist and need no QGIS."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
LINT_CONFIG = ROOT / ".github" / "zizmor.yml"
PORTABLE = ROOT / "tests" / "portable_tests.txt"
# What a runner without QGIS cannot import, and what the QGIS probes are run through.
QGIS_MODULES = {"qgis", "processing", "PyQt5", "PyQt6", "sip", "qgis_harness", "probe_support"}


def zizmor() -> str:
    found = shutil.which("zizmor", path=str(Path(sys.executable).parent)) or shutil.which("zizmor")
    assert found, "zizmor is pinned in requirements-dev.txt: run make install"
    return found


def lint(workflow: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [zizmor(), "--offline", "--no-progress", "--strict-collection", "--config",
         str(LINT_CONFIG), str(workflow)],
        capture_output=True, text=True, timeout=120,
    )


def portable_entries() -> list[str]:
    """The workflow's own reading: one argument a line, '#' lines and blank lines skipped."""
    lines = PORTABLE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_workflow_passes_the_linter():
    result = lint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("breakage, expected", [
    # a misspelt key: the job has no runner
    (("runs-on: ${{ matrix.os }}", "run-on: ${{ matrix.os }}"), "validation schema"),
    # a third-party action by a movable tag, which the config's policy forbids
    (("actions/setup-python@v5", "someone/setup-python@main"), "unpinned-uses"),
])
def test_a_broken_copy_of_the_workflow_fails_the_linter(tmp_path, breakage, expected):
    old, new = breakage
    text = WORKFLOW.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new), encoding="utf-8")
    result = lint(broken)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr


def test_the_workflow_runs_the_portable_list_on_three_systems():
    flow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    (job,) = flow["jobs"].values()
    assert job["strategy"]["matrix"]["os"] == ["ubuntu-latest", "windows-latest", "macos-latest"]
    uses = [step["uses"] for step in job["steps"] if "uses" in step]
    assert uses == ["actions/checkout@v4", "actions/setup-python@v5"]
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "-r requirements.txt -r requirements-dev.txt" in runs
    assert "tests/portable_tests.txt" in runs and "python -m pytest" in runs
    # The CPU torch step takes its pins from requirements.txt, as the workflow's grep does.
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
            if re.match(r"^(torch|torchvision)==", line)]
    assert [pin.split("==")[0] for pin in pins] == ["torch", "torchvision"]


def entry_problems(entry: str) -> list[str]:
    """Why one line of the portable list could not run on a runner without QGIS."""
    path_text, _, test_name = entry.partition("::")
    path = ROOT / path_text
    if not path.is_file():
        return [f"{entry}: no such file"]
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    problems = []
    qgis = sorted(m for m in imported_modules(tree)
                  if m.split(".")[0] in QGIS_MODULES or m.endswith("_probe")
                  or (m.startswith("text2earth_qgis")
                      and not m.startswith("text2earth_qgis.core")))
    if qgis:
        problems.append(f"{entry}: imports {', '.join(qgis)}")
    for marker in ("_probe.py", "qgis_harness", "SHARED_RASTERS", '"shared"'):
        if marker in source:
            problems.append(f"{entry}: uses {marker} (QGIS probes or ../shared data)")
    tests = {node.name for node in tree.body
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    if test_name and test_name not in tests:
        problems.append(f"{entry}: {path_text} has no test {test_name}")
    return problems


def test_every_portable_test_exists_and_needs_no_qgis():
    entries = portable_entries()
    assert len(entries) == len(set(entries)) > 0
    problems = [problem for entry in entries for problem in entry_problems(entry)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("entry, expected", [
    ("tests/test_batch_qgis.py", "imports processing"),      # QGIS imported inside functions
    ("tests/test_swipe.py", "_probe.py"),                    # runs a QGIS probe script
    ("tests/test_crs_cases.py", "SHARED_RASTERS"),           # reads ../shared rasters
    ("tests/test_grid.py::test_no_such_test", "has no test"),
    ("tests/test_gone.py", "no such file"),
])
def test_the_list_check_names_what_cannot_run_without_qgis(entry, expected):
    assert any(expected in problem for problem in entry_problems(entry))
