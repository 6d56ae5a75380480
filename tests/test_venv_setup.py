"""Engine set-up for real: a venv made with the stdlib's venv, pip installing a small offline
requirement set (tests/setup_wheels.py), real failures turned into advice, and repairs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from setup_wheels import REQUIREMENTS, isolated_pip_env, write_requirement_set

from text2earth_qgis.core.contract.gpu_driver import parse_nvidia_smi
from text2earth_qgis.core.failure_advice import SETUP, explain
from text2earth_qgis.core.setup.venv_setup import (
    TORCH_INDEX,
    PythonInfo,
    SetupError,
    SetupPlan,
    TorchBuild,
    choose_python,
    choose_torch_build,
    find_python,
    read_stamps,
    repair_steps,
    run_setup,
    split_torch,
)

CPU = TorchBuild("cpu", TORCH_INDEX + "cpu", "test")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    return write_requirement_set(tmp_path_factory.mktemp("wheels"))


def plan_for(tmp_path, wheels, **kwargs) -> SetupPlan:
    options = dict(no_index=True, find_links=[str(wheels)], engine_source="text2earth-engine")
    options.update(kwargs)
    return SetupPlan(venv=tmp_path / "engine-venv", python=sys.executable,
                     requirements=list(REQUIREMENTS), torch=CPU, **options)


def in_venv(plan: SetupPlan, code: str) -> str:
    # -I and cwd: the checkout's own engine/ must never be what is imported (or broken).
    out = subprocess.run([str(plan.venv_python), "-I", "-c", code], capture_output=True,
                         text=True, env=isolated_pip_env(), timeout=60, cwd=plan.venv)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, wheels):
    """A first set-up that fails at an unreachable index, then a re-run that completes it:
    one venv for every test of this module (making one is the slow part)."""
    # A user folder with a space and non-ASCII letters, as on many Windows machines.
    tmp_path = tmp_path_factory.mktemp("setup") / "Jürgen Müller" / "QGIS 3"
    plan = plan_for(tmp_path, wheels, no_index=False, find_links=[],
                    index_url="http://127.0.0.1:9/simple", retries=1, timeout_s=5)
    with pytest.raises(SetupError) as failed:
        run_setup(plan, env=isolated_pip_env())
    stamps_after_failure = read_stamps(plan)
    marker = plan.venv / "made-by-the-first-run"
    marker.write_text("")
    fixed = plan_for(tmp_path, wheels)  # the network is back (here: the local wheels)
    lines = []
    result = run_setup(fixed, lambda step, fraction, line: lines.append((step, line)),
                       env=isolated_pip_env())
    return {"error": failed.value, "stamps_after_failure": stamps_after_failure,
            "marker": marker, "plan": fixed, "result": result, "lines": lines}


def test_unreachable_index_is_explained_and_the_rerun_resumes(resumed):
    error = resumed["error"]
    assert error.step == "torch" and error.log_path.is_file()
    advice = explain(str(error), SETUP, log_path=error.log_path, log_tail=error.output,
                     step=error.step)
    assert advice.kind == "index_unreachable"
    assert advice.problem == "The package index could not be reached."
    assert str(error.log_path) in advice.message()
    assert "127.0.0.1:9" in error.log_path.read_text()
    assert resumed["stamps_after_failure"].keys() == {"venv"}  # the venv step is kept
    result = resumed["result"]
    assert result.skipped == ["venv"] and resumed["marker"].is_file()  # resumed, not redone
    assert result.ran == ["torch", "requirements", "engine"]


def test_setup_installs_for_real_then_skips_then_repairs_a_broken_package(resumed, tmp_path):
    plan, result, lines = resumed["plan"], resumed["result"], resumed["lines"]
    assert result.verify == {"torch": "2.0.0", "cuda": None, "cuda_available": False}
    assert result.python == plan.venv_python and plan.venv_python.is_file()
    # Its own environment: QGIS's (here the test venv's) packages are not visible in it.
    assert in_venv(plan, "import sys; print(sys.prefix != sys.base_prefix)") == "True"
    assert in_venv(plan, "import importlib.util as u; print(u.find_spec('pytest'))") == "None"
    assert any(step == "torch" and "Successfully installed torch-2.0.0" in line
               for step, line in lines)
    log = result.log_path.read_text()
    assert "--no-index" in log and "Successfully installed tinydep-1.0" in log
    assert "Jürgen Müller/QGIS 3/engine-venv" in log  # the log keeps the path's letters

    again = run_setup(plan, env=isolated_pip_env())  # nothing to do: every stamp matches
    assert again.ran == [] and again.skipped == ["venv", "torch", "requirements", "engine"]

    # A package breaks after its stamp was written: the check names it and only the step that
    # installs it is redone (a forced reinstall of that package alone), then it imports again.
    log_size = result.log_path.stat().st_size
    Path(in_venv(plan, "import torch; print(torch.__file__)")).unlink()
    repaired = run_setup(plan, env=isolated_pip_env())
    assert repaired.ran == [] and repaired.repaired == ["torch"]
    assert repaired.verify["torch"] == "2.0.0" and resumed["marker"].is_file()
    repair_log = repaired.log_path.read_text()[log_size:]
    forced = [line for line in repair_log.splitlines() if "--force-reinstall" in line]
    assert len(forced) == 1 and forced[0].endswith("--force-reinstall --no-deps torch==2.0.0")
    assert run_setup(plan, env=isolated_pip_env()).repaired == []  # and the stamps still hold


@pytest.mark.parametrize("breakage, step, forced", [
    ("import tinydep, os; os.remove(tinydep.__file__)", "requirements", "tinydep==1.0"),
    ("import engine.cli, os; os.remove(engine.cli.__file__)", "engine", "text2earth-engine"),
])
def test_repair_redoes_only_the_step_of_what_broke(resumed, breakage, step, forced):
    plan = resumed["plan"]
    log_size = resumed["result"].log_path.stat().st_size
    in_venv(plan, breakage)
    repaired = run_setup(plan, env=isolated_pip_env())
    assert repaired.ran == [] and repaired.repaired == [step]
    assert repaired.verify == {"torch": "2.0.0", "cuda": None, "cuda_available": False}
    log = repaired.log_path.read_text()[log_size:]
    assert f"redoing the {step} step" in log
    forced_lines = [line for line in log.splitlines() if "--force-reinstall" in line]
    assert len(forced_lines) == 1 and forced_lines[0].endswith(f"--no-deps {forced}")
    assert "torch==2.0.0" not in forced_lines[0]  # torch is never swapped by a repair


def test_repair_steps_map_the_check_to_the_steps_that_install_it():
    pins = ["torch==2.14.1", "torchvision==0.29.1", "diffusers==0.42.1", "numpy==1.24.4"]
    error = "ModuleNotFoundError: No module named 'x'"
    assert repair_steps({"missing": ["torchvision"]}, pins) == {
        "torch": ["torchvision==0.29.1"]}
    assert repair_steps({"mismatched": ["numpy 2.1.0"], "missing": ["diffusers"]}, pins) == {
        "requirements": ["diffusers==0.42.1", "numpy==1.24.4"]}
    # A file gone from an unpinned dependency: that distribution at its installed version.
    assert repair_steps({"error": error, "owners": ["regex==2024.11.6"]}, pins) == {
        "requirements": ["regex==2024.11.6"]}
    assert repair_steps({"error": error, "missing_module": "text2earth_qgis.core"}, pins) == {
        "engine": []}
    assert repair_steps({"missing": ["text2earth-engine"]}, pins) == {"engine": []}
    assert repair_steps({"error": error, "missing_module": "regex"}, pins) == {
        "requirements": [], "engine": []}  # nothing named: put back what is missing
    assert repair_steps({"missing": [], "mismatched": [], "error": ""}, pins) == {}


def test_broken_pythons_are_explained(tmp_path):
    broken = tmp_path / "python3"
    broken.write_text("#!/bin/sh\necho 'error while loading shared libraries' >&2\nexit 127\n")
    broken.chmod(0o755)
    for path, expected in ((broken, "does not run"), (tmp_path / "missing", "cannot run")):
        with pytest.raises(SetupError, match=expected) as failed:
            find_python(str(path))
        advice = explain(str(failed.value), SETUP, step=failed.value.step)
        assert advice.kind == "broken_python", advice
    # The set-up itself with a Python that cannot run: the venv step says so.
    plan = SetupPlan(venv=tmp_path / "v", python=str(tmp_path / "missing"),
                     requirements=[], torch=CPU, log_path=tmp_path / "setup.log")
    with pytest.raises(SetupError) as failed:
        run_setup(plan)
    assert failed.value.step == "venv"
    assert explain(str(failed.value), SETUP).kind == "broken_python"
    assert find_python(sys.executable).version[:2] == sys.version_info[:2]


def test_python_choice_prefers_a_usable_supported_version():
    old = PythonInfo("/a", (3, 9, 18), True, True)
    no_venv = PythonInfo("/b", (3, 12, 1), True, False)
    new = PythonInfo("/c", (3, 14, 0), True, True)
    good = PythonInfo("/d", (3, 11, 7), True, True)
    assert choose_python([old, no_venv, new, good]) is good
    assert choose_python([old, no_venv, new]) is new  # newer than preferred, but usable
    assert choose_python([old, no_venv]) is None
    assert "python3-venv" in no_venv.problem() and "older than 3.10" in old.problem()


def test_torch_build_follows_the_driver():
    linux = choose_torch_build("linux", "x86_64", None)
    assert linux.kind == "cpu" and linux.index_url.endswith("/whl/cpu")
    assert "no NVIDIA GPU driver" in linux.reason
    assert "install" not in linux.reason.lower()  # no GPU advice: most have no NVIDIA GPU
    assert choose_torch_build("linux", "x86_64", "580.65.06").index_url.endswith("/cu130")
    assert choose_torch_build("win32", "AMD64", "572.16").index_url.endswith("/cu128")
    assert choose_torch_build("linux", "x86_64", "565.57.01").index_url.endswith("/cu126")
    old = choose_torch_build("linux", "x86_64", "470.82")
    assert old.kind == "cpu" and "update the driver" in old.reason
    assert choose_torch_build("linux", "x86_64", "580.1", requested="cpu").kind == "cpu"
    mac = choose_torch_build("darwin", "arm64", None)
    assert mac.kind == "mps" and mac.index_url is None  # PyPI's macOS wheels carry MPS
    assert choose_torch_build("darwin", "x86_64", None).kind == "cpu"
    assert parse_nvidia_smi("580.65.06\n") == "580.65.06"
    assert parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate") is None


def test_torch_comes_alone_from_its_index_and_the_rest_from_the_usual_one(tmp_path):
    requirements = ["torch==2.14.1", "torchvision==0.29.1", "diffusers==0.42.1",
                    "open_clip_torch==3.3.0"]
    assert split_torch(requirements)[0] == ["torch==2.14.1", "torchvision==0.29.1"]
    plan = SetupPlan(tmp_path / "v", sys.executable, requirements, CPU, engine_source="/src")
    commands = plan.commands()
    torch = commands["torch"]
    assert torch[torch.index("--index-url") + 1] == TORCH_INDEX + "cpu"
    assert torch[-3:] == ["--no-deps", "torch==2.14.1", "torchvision==0.29.1"]
    rest = commands["requirements"]
    assert "--index-url" not in rest and rest[-4:] == requirements  # pip's own index
    assert commands["engine"][-2:] == ["--no-deps", "/src"]
    assert commands["venv"] == [sys.executable, "-m", "venv", str(tmp_path / "v")]


@pytest.mark.parametrize("output, kind", [
    ("OSError: [Errno 28] No space left on device", "no_space"),
    ("SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED]", "certificate"),
    ("ERROR: No matching distribution found for torch==2.14.1", "no_build"),
    ("ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.",
     "download_corrupt"),
    ("Error: ensurepip is not available", "no_venv_module"),
    ("ImportError: DLL load failed while importing _C", "dll"),
    ("error: Microsoft Visual C++ 14.0 or greater is required", "must_compile"),
])
def test_set_up_failures_that_cannot_be_provoked_here_still_get_their_advice(output, kind):
    """pip's and Python's own wording, as they print it."""
    advice = explain("requirements step failed (exit code 1)", SETUP, log_path="/x/setup.log",
                     log_tail=output, step="requirements")
    assert advice.kind == kind
    assert advice.message(with_log=False).count("\n") == 0  # one message, then the log
    assert "Log: /x/setup.log" in advice.message()


def test_an_engine_without_the_plugins_core_fails_once_with_the_fix(tmp_path):
    """Issue 23's door: an engine built without text2earth_qgis/core. The check names the
    missing module, nothing is redone (the engine step has just run), and the message says
    to leave Engine source empty, not to run the set-up again."""
    from setup_wheels import write_wheel

    from text2earth_qgis.core.setup.setup_summary import failure_message

    wheels = write_requirement_set(tmp_path / "wheels")
    for old in wheels.glob("text2earth_engine-*.whl"):
        old.unlink()
    write_wheel(wheels, "text2earth-engine", "0.1.0", {
        "engine/__init__.py": "", "engine/cli.py": "from text2earth_qgis.core import scale\n"})
    plan = plan_for(tmp_path, wheels)
    with pytest.raises(SetupError) as failed:
        run_setup(plan, env=isolated_pip_env())
    error = failed.value
    assert error.step == "verify"
    assert str(error) == ("the engine does not import after the set-up: "
                          "ModuleNotFoundError: No module named 'text2earth_qgis'")
    assert "redoing" not in error.log_path.read_text()
    message = failure_message(error, error.step, error.log_path, error.output)
    assert message.startswith("The engine's source lacks the plugin's core (text2earth_qgis). "
                              "Leave Engine source empty under Advanced")


def test_no_usable_python_says_which_were_found_and_why(tmp_path):
    """The rule's advice alone ("choose another Python, or leave the field empty") would not
    help when the field is already empty: the message keeps the cause, each Python's fault."""
    from text2earth_qgis.core.setup.setup_summary import failure_message

    broken = tmp_path / "python3"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(SetupError) as failed:
        find_python(str(broken))
    message = failure_message(failed.value, failed.value.step)
    assert "Choose another Python" in message
    assert str(broken) in message and "does not run" in message
