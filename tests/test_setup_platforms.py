"""The set-up's Windows and macOS paths on folders shaped like the real installs (a fake
`which`, the platform passed in), the torch fallback, the source resolution from the plugin
zip, no console window for any subprocess, and the summary said before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from setup_wheels import REQUIREMENTS, isolated_pip_env, write_requirement_set

from text2earth_qgis.core.contract.gpu_driver import nvidia_smi_path
from text2earth_qgis.core.setup import venv_setup
from text2earth_qgis.core.setup.setup_summary import estimate, failure_message, plan_summary
from text2earth_qgis.core.setup.venv_setup import (
    TORCH_INDEX,
    SetupError,
    SetupPlan,
    TorchBuild,
    choose_torch_build,
    make_plan,
    python_candidates,
    resolve_engine_source,
    run_setup,
    usual_index_torch,
)

ROOT = Path(__file__).resolve().parents[1]


def touch(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return str(path)


def fake_which(table: dict):
    return lambda name: table.get(name)


def test_windows_candidates_from_a_qgis_install_and_a_user_with_a_non_ascii_name(tmp_path):
    c = tmp_path / "C"
    qgis_base = c / "Program Files" / "QGIS 3.34.4" / "apps" / "Python312"
    qgis = touch(qgis_base / "python.exe")
    local = c / "Users" / "Jürgen Müller" / "AppData" / "Local"
    store = touch(local / "Microsoft" / "WindowsApps" / "python3.exe")
    user = touch(local / "Programs" / "Python" / "Python311" / "python.exe")
    manager = touch(local / "Python" / "pythoncore-3.14-64" / "python.exe")
    everyone = touch(c / "Program Files" / "Python312" / "python.exe")
    which = fake_which({"python3": store, "python": user})
    env = {"LOCALAPPDATA": str(local), "ProgramFiles": str(c / "Program Files")}
    found = python_candidates("win32", which, str(qgis_base), env)
    # The Store's stand-in is never run; QGIS's own Python (sys.executable is qgis-bin.exe
    # there) comes right after what PATH gives; python.org per user, the Python install
    # manager and python.org for all users follow; none twice.
    assert found == [user, qgis, manager, everyone]
    assert store not in found


def test_nvidia_smi_is_found_where_windows_drivers_put_it(tmp_path):
    env = {"SystemRoot": str(tmp_path / "Windows"),
           "ProgramFiles": str(tmp_path / "Program Files")}
    assert nvidia_smi_path("win32", fake_which({}), env) is None  # no driver: no GPU advice
    old = touch(tmp_path / "Program Files" / "NVIDIA Corporation" / "NVSMI" / "nvidia-smi.exe")
    assert nvidia_smi_path("win32", fake_which({}), env) == old
    dch = touch(tmp_path / "Windows" / "System32" / "nvidia-smi.exe")
    assert nvidia_smi_path("win32", fake_which({}), env) == dch
    assert nvidia_smi_path("linux", fake_which({}), env) is None


def test_the_venv_python_on_windows_is_scripts_python_exe(tmp_path):
    venv = tmp_path / "Jürgen Müller" / "engine venv"
    plan = SetupPlan(venv, r"C:\Program Files\QGIS 3.34.4\apps\Python312\python.exe",
                     ["torch==2.14.1"], TorchBuild("cpu", TORCH_INDEX + "cpu", "t"),
                     platform="win32")
    assert plan.venv_python == venv / "Scripts" / "python.exe"
    commands = plan.commands()
    assert commands["venv"][0].endswith(r"apps\Python312\python.exe")
    assert commands["torch"][0] == str(venv / "Scripts" / "python.exe")


def test_macos_candidates_skip_apples_stub_and_find_qgis_python_org_and_homebrew(tmp_path):
    root = tmp_path
    stub = touch(root / "usr" / "bin" / "python3")
    app = root / "Applications"
    ltr = touch(app / "QGIS-LTR.app" / "Contents" / "MacOS" / "bin" / "python3")
    new = touch(app / "QGIS.app" / "Contents" / "Frameworks" / "Python.framework" / "Versions"
                / "3.12" / "bin" / "python3")
    python_org = touch(root / "Library" / "Frameworks" / "Python.framework" / "Versions"
                       / "3.12" / "bin" / "python3")
    brew_versioned = touch(root / "opt" / "homebrew" / "opt" / "python@3.11" / "bin" / "python3")
    brew = touch(root / "opt" / "homebrew" / "bin" / "python3")
    intel_brew = touch(root / "usr" / "local" / "bin" / "python3")
    # QGIS runs with sys.base_prefix inside its bundle; PATH from Finder finds only the stub.
    found = python_candidates("darwin", fake_which({"python3": stub}),
                              str(app / "QGIS-LTR.app" / "Contents" / "MacOS"), {}, root)
    assert stub not in found
    assert found == [ltr, new, python_org, brew_versioned, brew, intel_brew]


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need a privilege on Windows")
def test_symlinked_duplicates_are_probed_once(tmp_path):
    real = Path(touch(tmp_path / "bin" / "python3.12"))
    (tmp_path / "bin" / "python3").symlink_to(real)
    which = fake_which({"python3.12": str(real), "python3": str(tmp_path / "bin" / "python3")})
    assert python_candidates("linux", which, str(tmp_path / "none")) == [str(real)]


@pytest.mark.parametrize("platform, machine, kind", [
    ("linux", "x86_64", "cuda"), ("linux", "aarch64", "cpu"), ("win32", "AMD64", "cpu")])
def test_torch_from_the_usual_index_when_torchs_own_cannot_be_reached(platform, machine, kind):
    chosen = choose_torch_build(platform, machine, None)
    fallback = usual_index_torch(platform, machine, chosen)
    assert fallback.kind == kind and fallback.index_url is None  # pip's usual index
    assert "download.pytorch.org" in fallback.reason and "cannot be reached" in fallback.reason
    assert fallback.reason.startswith("no NVIDIA GPU driver found")


def zip_shaped_plugin(tmp_path: Path) -> Path:
    """The layout `make package` gives: the plugin, with the engine's source (and no second
    copy of the plugin's core) in engine_source/."""
    plugin = tmp_path / "plugins" / "text2earth_qgis"
    (plugin / "core").mkdir(parents=True)
    (plugin / "__init__.py").write_text("")
    (plugin / "core" / "scale.py").write_text("LEVEL = 17\n")
    source = plugin / "engine_source"
    (source / "engine").mkdir(parents=True)
    (source / "engine" / "cli.py").write_text("from text2earth_qgis.core import scale\n")
    (source / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (source / "requirements.txt").write_text("torch==2.0.0\ntinydep==1.0\n")
    return plugin


def test_the_zips_engine_source_is_made_buildable_whether_given_or_left_empty(tmp_path):
    plugin = zip_shaped_plugin(tmp_path)
    venv = tmp_path / "engine-venv"
    shipped = plugin / "engine_source"
    for given in (None, str(shipped)):  # empty (the default), or the field pre-filled
        source = resolve_engine_source(given, venv, plugin)
        assert source.build_from == shipped
        assert source.source == str(venv / "engine-build" / "source")
    # A checkout (it has the core) is installed as it is; wheels and names pass through.
    assert resolve_engine_source(str(ROOT), venv, plugin).build_from is None
    assert resolve_engine_source("text2earth-engine", venv, plugin).source == \
        "text2earth-engine"
    with pytest.raises(SetupError, match="leave Engine source empty") as failed:
        resolve_engine_source(str(tmp_path), venv, plugin)
    message = failure_message(failed.value, failed.value.step)
    assert message.startswith(f"{tmp_path} is not the engine's source")
    # A new plugin version changes the engine step's fingerprint, so it is reinstalled.
    before = resolve_engine_source(None, venv, plugin).digest
    (plugin / "core" / "scale.py").write_text("LEVEL = 18\n")
    assert resolve_engine_source(None, venv, plugin).digest != before


def test_make_plan_from_the_zip_with_the_defaults(tmp_path):
    plugin = zip_shaped_plugin(tmp_path)
    asked = []
    plan = make_plan(tmp_path / "engine-venv", python=sys.executable, plugin_dir=plugin,
                     index_reachable=lambda url: asked.append(url) or "Name or service not known")
    assert plan.requirements == ["torch==2.0.0", "tinydep==1.0"]
    assert plan.engine_build_from == plugin / "engine_source"
    if plan.torch.index_url is None:  # torch's own index was asked and did not answer
        assert asked and asked[0].startswith(TORCH_INDEX)
        assert "cannot be reached" in plan.torch.reason
    assert not (tmp_path / "engine-venv").exists()  # planning changes nothing on disk
    reachable = make_plan(tmp_path / "v", python=sys.executable, plugin_dir=plugin,
                          index_reachable=lambda url: "")
    assert reachable.torch.index_url is None or reachable.torch.index_url.startswith(
        TORCH_INDEX)


def test_the_zips_engine_installs_with_the_plugins_core(tmp_path):
    """The engine step from the zip's source: the plugin's core goes in with it, so the
    engine imports (the ModuleNotFoundError of issue 23)."""
    wheels = write_requirement_set(tmp_path / "wheels")
    setuptools = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
         "setuptools>=66"], capture_output=True, text=True, timeout=120)
    if setuptools.returncode != 0:
        pytest.skip("no setuptools wheel reachable to build the engine: " + setuptools.stderr)
    plugin = zip_shaped_plugin(tmp_path)
    venv = tmp_path / "Jürgen Müller" / "engine venv"
    source = resolve_engine_source(None, venv, plugin)
    plan = SetupPlan(venv, sys.executable, list(REQUIREMENTS), TorchBuild("cpu", None, "t"),
                     engine_source=source.source, engine_build_from=source.build_from,
                     plugin_dir=plugin, engine_digest=source.digest, no_index=True,
                     find_links=[str(wheels)])
    result = run_setup(plan, env=isolated_pip_env())
    assert result.ran == ["venv", "torch", "requirements", "engine"]
    assert result.verify["torch"] == "2.0.0"
    scale = subprocess.run([str(plan.venv_python), "-I", "-c", "from text2earth_qgis.core "
                            "import scale; print(scale.LEVEL)"], capture_output=True,
                           text=True, cwd=venv)
    assert scale.stdout.strip() == "17"


def test_every_subprocess_of_the_set_up_has_no_console_window(tmp_path, monkeypatch):
    wheels = write_requirement_set(tmp_path / "wheels")
    flags = []
    real_popen = subprocess.Popen

    class Recorder(real_popen):
        def __init__(self, args, *rest, creationflags=0, **kwargs):
            flags.append((args[0], creationflags))
            super().__init__(args, *rest, **kwargs)  # Linux refuses creationflags

    monkeypatch.setattr(venv_setup, "NO_WINDOW", 0x08000000)
    monkeypatch.setattr(venv_setup.subprocess, "Popen", Recorder)
    venv_setup.probe_python(sys.executable)
    plan = SetupPlan(tmp_path / "v", sys.executable, list(REQUIREMENTS),
                     TorchBuild("cpu", None, "t"), engine_source="text2earth-engine",
                     no_index=True, find_links=[str(wheels)])
    run_setup(plan, env=isolated_pip_env())
    assert len(flags) >= 6  # the probe, venv, three pip runs, the check
    assert all(flag == 0x08000000 for _, flag in flags), flags


def test_the_summary_says_size_time_and_torch_before_anything_starts():
    steps = ["venv", "torch", "requirements", "engine"]
    cuda = plan_summary("cuda", "NVIDIA driver 580.65.06: the CUDA build (cu130)", steps,
                        "/home/me/engine-venv", "/usr/bin/python3.11", (3, 11, 7))
    # 6.3 GB is what the CUDA environment measured on disk (du), from 3.3 GB of wheels.
    assert cuda.startswith("Downloads about 3.3 GB and installs about 6.3 GB: about 12 "
                           "minutes on a typical 50 Mbit/s connection.")
    assert "torch: the CUDA (NVIDIA GPU) build (NVIDIA driver 580.65.06" in cuda
    assert "Python 3.11.7 (/usr/bin/python3.11)" in cuda and "/home/me/engine-venv" in cuda
    cpu = plan_summary("cpu", "no NVIDIA GPU driver found: the CPU build", steps, "/v",
                       "/p", (3, 12, 1))
    assert cpu.startswith("Downloads about 600 MB and installs about 2.0 GB")
    assert "NVIDIA driver" not in cpu.replace("no NVIDIA GPU driver found", "")
    done = plan_summary("cpu", "x", [], "/v", "/p", (3, 12, 1))
    assert "already set up" in done and "repairs only what is broken" in done
    assert estimate("cpu", ["engine"]).download_mb == 0


def test_failure_messages_name_cause_and_fix_and_are_never_empty():
    for error, step, expected in [
        (SetupError("verify", "the engine does not import after the set-up: "
                    "ModuleNotFoundError: No module named 'text2earth_qgis'"), "verify",
         "Leave Engine source empty under Advanced"),
        (SetupError("verify", "the engine does not import after a repair of the requirements "
                    "step: ImportError: cannot import name 'x'"), "verify",
         "Cause: the engine does not import after a repair"),
        (SetupError("requirements", "requirements step was stopped from outside (signal 15): "
                    "run the set-up again"), "requirements", "Cause: requirements step was"),
        (SetupError("torch", ""), "torch", "The set-up failed at the torch step."),
    ]:
        message = failure_message(error, step, "/x/setup.log", "")
        assert expected in message and message.endswith("Log: /x/setup.log"), message
        assert "GPU" not in message
