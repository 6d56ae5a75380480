"""Set up the engine's own virtual environment from inside QGIS. Stdlib only, no Qt.

The engine never goes into QGIS's Python: a separate venv is made from any Python 3.10+ on
the machine (or one the user names), and pip installs the pinned requirements into it.
pip, not uv: it comes with every venv through ensurepip (nothing to fetch before the first
step, works behind an offline mirror) and it honours the pip.conf / PIP_* settings, proxy and
certificates an organisation has already configured; with exact pins its resolver has
nothing to search, and the time goes into downloads either way.

Torch (and torchvision) are installed first, alone and without dependencies, from the torch
index of the chosen build (CUDA or CPU) with no other index beside it, so the resolver can
never mix builds. Then every pin, torch's included, comes from the normal index: the torch
just installed satisfies its pin (2.14.1+cpu is 2.14.1), and its own dependencies come from
there. Each finished step leaves a stamp in the venv, so a re-run after a failure resumes
where it stopped instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess  # nosec B404 - pip and Python run with list argv, never a shell
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .engine_manager import venv_python
from .gpu_driver import NO_WINDOW, detect_nvidia_driver
from .http_open import open_http

MIN_PYTHON = (3, 10)
# Newest first among those torch has long had wheels for; newer ones only if nothing else.
PREFERRED_PYTHONS = [(3, 12), (3, 11), (3, 10), (3, 13)]
STAMP_FILE = "text2earth-setup.json"
TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")
TORCH_INDEX = "https://download.pytorch.org/whl/"
# (minimum NVIDIA driver major version on Linux/Windows, torch CUDA wheel tag), newest first.
CUDA_BUILDS = [(580, "cu130"), (570, "cu128"), (560, "cu126")]
STEPS = ("venv", "torch", "requirements", "engine", "verify")
VERIFY_SCRIPT = (
    "import json, torch; import engine.cli; "
    "print('T2E-VERIFY ' + json.dumps({'torch': torch.__version__, "
    "'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available()}))"
)



class SetupError(Exception):
    """A step failed; ``step`` names it and ``log_path`` holds the whole story."""

    def __init__(self, step: str, message: str, log_path: Path | None = None,
                 output: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.log_path = log_path
        self.output = output


class SetupCancelled(SetupError):  # noqa: N818 - a state, not a fault
    pass


# ----- which Python ----------------------------------------------------------------------------

PYTHON_PROBE = (
    "import json, sys, importlib.util as u; print(json.dumps({'version': list(sys.version_info"
    "[:3]), 'venv': bool(u.find_spec('venv')), 'ensurepip': bool(u.find_spec('ensurepip')), "
    "'executable': sys.executable}))"
)


@dataclass(frozen=True)
class PythonInfo:
    path: str
    version: tuple[int, ...] = ()
    has_venv: bool = False
    has_ensurepip: bool = False
    error: str = ""

    @property
    def usable(self) -> bool:
        return not self.error and self.version[:2] >= MIN_PYTHON and self.has_venv \
            and self.has_ensurepip

    def problem(self) -> str:
        """Why this Python cannot make the engine's venv ('' when it can)."""
        if self.error:
            return self.error
        if self.version[:2] < MIN_PYTHON:
            return f"Python {'.'.join(map(str, self.version))} is older than 3.10"
        if not self.has_venv or not self.has_ensurepip:
            return ("it lacks the venv/ensurepip modules (on Debian/Ubuntu: "
                    "sudo apt install python3-venv)")
        return ""


def probe_python(path: str, timeout: float = 20.0) -> PythonInfo:
    """Ask an interpreter what it is; any failure becomes ``error``, never an exception."""
    try:
        out = subprocess.run(  # nosec B603 - list argv, no shell
            [path, "-I", "-c", PYTHON_PROBE], capture_output=True, text=True,
            timeout=timeout, creationflags=NO_WINDOW, env=clean_env())
    except (OSError, subprocess.SubprocessError) as exc:
        return PythonInfo(path, error=f"cannot run {path}: {exc}")
    if out.returncode != 0:
        last = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        return PythonInfo(path, error=f"{path} does not run ({last[0]})")
    try:
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return PythonInfo(path, error=f"{path} is not a Python interpreter")
    return PythonInfo(path, tuple(info["version"]), info["venv"], info["ensurepip"])


def python_candidates(platform: str = sys.platform, which: Callable = shutil.which,
                      base_prefix: str = sys.base_prefix) -> list[str]:
    """Interpreters worth probing, most specific first, without duplicates."""
    names = [f"python{major}.{minor}" for major, minor in PREFERRED_PYTHONS] + [
        "python3", "python"]
    found = [which(name) for name in names]
    if platform == "win32":
        found.append(str(Path(base_prefix) / "python.exe"))  # QGIS's own, as a base only
        found += [str(p) for p in sorted(Path(os.environ.get("LOCALAPPDATA", "C:/")).glob(
            "Programs/Python/Python3*/python.exe"), reverse=True)]
    else:
        if platform == "darwin":
            found += [str(p) for p in sorted(Path("/Library/Frameworks/Python.framework/"
                                                  "Versions").glob("3.*/bin/python3"))]
            found.append("/opt/homebrew/bin/python3")
        found.append(str(Path(base_prefix) / "bin" / "python3"))
    seen, out = set(), []
    for path in found:
        if path and path not in seen and Path(path).is_file():
            seen.add(path)
            out.append(path)
    return out


def choose_python(infos: list[PythonInfo]) -> PythonInfo | None:
    """The usable interpreter of the most preferred version; then the newest other usable."""
    usable = [i for i in infos if i.usable]
    for wanted in PREFERRED_PYTHONS:
        for info in usable:
            if info.version[:2] == wanted:
                return info
    return max(usable, key=lambda i: i.version, default=None)


def find_python(configured: str | None = None) -> PythonInfo:
    """The user's Python if given (and it must then work), else the best one found."""
    if configured:
        info = probe_python(configured)
        if not info.usable:
            raise SetupError("python", f"the Python you chose cannot be used: {info.problem()}")
        return info
    infos = [probe_python(path) for path in python_candidates()]
    best = choose_python(infos)
    if best is None:
        tried = "; ".join(f"{i.path}: {i.problem()}" for i in infos) or "none found"
        raise SetupError("python", f"no Python 3.10 or newer with venv found ({tried})")
    return best


# ----- which torch ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TorchBuild:
    kind: str  # "cuda", "cpu", "mps"
    index_url: str | None  # None: the normal package index
    reason: str


def choose_torch_build(platform: str, machine: str, driver: str | None,
                       requested: str = "auto") -> TorchBuild:
    """Which torch wheels suit this machine: pure, so every branch is tested."""
    requested = (requested or "auto").lower()
    if platform == "darwin":
        # PyPI's macOS wheels are the MPS (Apple silicon) / CPU build; there is no other.
        kind = "mps" if machine.lower() in ("arm64", "aarch64") else "cpu"
        why = "Apple silicon: the GPU through MPS" if kind == "mps" else "an Intel Mac: CPU"
        return TorchBuild(kind, None, why)
    if requested == "cpu":
        return TorchBuild("cpu", TORCH_INDEX + "cpu", "CPU build, as asked")
    if driver is None:
        if requested == "cuda":
            return TorchBuild("cuda", TORCH_INDEX + CUDA_BUILDS[-1][1],
                              "CUDA build, as asked, though no NVIDIA driver was found")
        return TorchBuild("cpu", TORCH_INDEX + "cpu",
                          "no NVIDIA driver found: the CPU build (install the NVIDIA driver "
                          "and run the set-up again to use the GPU)")
    major = int(driver.split(".")[0])
    for minimum, tag in CUDA_BUILDS:
        if major >= minimum:
            return TorchBuild("cuda", TORCH_INDEX + tag,
                              f"NVIDIA driver {driver}: the CUDA build ({tag})")
    if requested == "cuda":
        tag = CUDA_BUILDS[-1][1]
        return TorchBuild("cuda", TORCH_INDEX + tag,
                          f"CUDA build ({tag}), as asked; driver {driver} may be too old")
    return TorchBuild("cpu", TORCH_INDEX + "cpu",
                      f"NVIDIA driver {driver} is older than the CUDA builds of torch need "
                      f"({CUDA_BUILDS[-1][0]}+): the CPU build; update the driver and run "
                      "the set-up again to use the GPU")


# ----- the plan and its steps ------------------------------------------------------------------

def read_requirements(path: Path) -> list[str]:
    """The requirement lines of a pinned requirements file (comments and blanks dropped)."""
    lines = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def requirement_name(line: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", line, maxsplit=1)[0].lower().replace("_", "-")


def split_torch(requirements: list[str]) -> tuple[list[str], list[str]]:
    torch = [r for r in requirements if requirement_name(r) in TORCH_PACKAGES]
    return torch, [r for r in requirements if r not in torch]


@dataclass
class SetupPlan:
    venv: Path
    python: str  # the interpreter the venv is made from
    requirements: list[str]
    torch: TorchBuild
    engine_source: str | None = None  # a project folder, wheel or URL; installed --no-deps
    index_url: str | None = None  # None: pip's own configuration decides
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    retries: int = 2
    force: bool = False  # reinstall even what pip thinks is there (a repair)
    timeout_s: int = 30
    verify_script: str = VERIFY_SCRIPT
    log_path: Path | None = None

    @property
    def venv_python(self) -> Path:
        return venv_python(self.venv)

    @property
    def stamp_path(self) -> Path:
        return self.venv / STAMP_FILE

    def pip_args(self, requirements: list[str], index_url: str | None) -> list[str]:
        args = [str(self.venv_python), "-m", "pip", "install", "--progress-bar", "off",
                "--disable-pip-version-check", "--no-input", "--retries", str(self.retries),
                "--timeout", str(self.timeout_s)]
        if self.no_index:
            args.append("--no-index")
        elif index_url:
            args += ["--index-url", index_url]
        for link in self.find_links:
            args += ["--find-links", link]
        if self.force:
            args.append("--force-reinstall")
        return args + requirements

    def commands(self) -> dict[str, list[str]]:
        """Each install step's command line (also its fingerprint)."""
        torch, _ = split_torch(self.requirements)
        torch_index = self.torch.index_url if self.index_url is None else self.index_url
        commands = {
            "venv": [self.python, "-m", "venv", str(self.venv)],
            "torch": self.pip_args(["--no-deps", *torch], torch_index) if torch else [],
            "requirements": (self.pip_args(self.requirements, self.index_url)
                             if self.requirements else []),
            "engine": (self.pip_args(["--no-deps", self.engine_source], self.index_url)
                       if self.engine_source else []),
        }
        return commands


def fingerprint(command: list[str]) -> str:
    """What a step's stamp records: its command, less a repair's --force-reinstall."""
    kept = [arg for arg in command if arg != "--force-reinstall"]
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16]


def read_stamps(plan: SetupPlan) -> dict:
    try:
        data = json.loads(plan.stamp_path.read_text())
        return data.get("steps", {}) if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_stamps(plan: SetupPlan, steps: dict, extra: dict | None = None) -> None:
    tmp = plan.stamp_path.with_name(plan.stamp_path.name + ".tmp")
    tmp.write_text(json.dumps({"steps": steps, "torch_build": asdict(plan.torch),
                               **(extra or {})}, indent=1))
    os.replace(tmp, plan.stamp_path)


def clean_env(base: dict | None = None) -> dict:
    """QGIS sets PYTHONHOME/PYTHONPATH for its own Python; the engine's must not inherit them."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"):
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def index_check(plan: SetupPlan, step: str, timeout: float = 8.0) -> str:
    """A line on whether the step's package index answers: pip, told to retry little, may
    only say "no matching distribution" when the index was never reached."""
    url = plan.index_url or (plan.torch.index_url if step == "torch" else None) \
        or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"
    try:
        with open_http(url, timeout=timeout):
            return ""
    except urllib.error.HTTPError:
        return ""  # it answered: reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"\nindex check: {url} is unreachable (Failed to establish a new connection: " \
               f"{reason})"


def run_logged(step: str, args: list[str], log, on_line: Callable[[str], None],
               is_canceled: Callable[[], bool], env: dict, tail_lines: int = 40) -> str:
    """Run one command, every output line to the log and ``on_line``; its last lines back."""
    log.write(f"\n$ {' '.join(args)}\n")
    log.flush()
    try:
        process = subprocess.Popen(  # nosec B603 - pip's list argv, no shell
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, text=True,
            errors="replace", creationflags=NO_WINDOW)
    except OSError as exc:
        log.write(f"cannot run {args[0]}: {exc}\n")
        raise SetupError(step, f"cannot run {args[0]}: {exc}", output=str(exc)) from None
    # Lines come through a thread, so a cancel is seen within 0.2 s even while pip spends
    # minutes on one silent download.
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout] + [lines.put(None)],
                     daemon=True).start()
    tail: list[str] = []
    while True:
        if is_canceled():
            process.terminate()
            process.wait(30)
            raise SetupCancelled(step, "set-up cancelled")
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        log.write(line)
        tail = (tail + [line.rstrip()])[-tail_lines:]
        on_line(line.rstrip())
    code = process.wait()
    log.flush()
    if code != 0:
        raise SetupError(step, f"{step} step failed (exit code {code})", output="\n".join(tail))
    return "\n".join(tail)


@dataclass
class SetupResult:
    python: Path  # the venv's interpreter: what the engine settings should point at
    ran: list[str]
    skipped: list[str]
    verify: dict
    log_path: Path
    seconds: float


def venv_works(plan: SetupPlan, env: dict) -> bool:
    if not plan.venv_python.is_file():
        return False
    try:
        out = subprocess.run(  # nosec B603 - list argv, no shell
            [str(plan.venv_python), "-c", "import sys, pip; print(sys.prefix)"],
            capture_output=True, text=True, timeout=30, env=env,
            creationflags=NO_WINDOW)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


def _run_steps(plan: SetupPlan, commands: dict, stamps: dict, ran: list, skipped: list, log,
               report: Callable, is_canceled: Callable, env: dict) -> str:
    for index, step in enumerate(STEPS[:-1]):
        command = commands[step]
        fraction = index / len(STEPS)
        if not command or stamps.get(step) == fingerprint(command):
            skipped.append(step)
            report(step, fraction, f"{step}: already done")
            continue
        report(step, fraction, f"{step}: starting")
        if step == "venv":
            stamps.clear()  # a new venv: nothing that was installed before is there
            if plan.venv.exists():
                command = command[:3] + ["--clear"] + command[3:]
            plan.venv.parent.mkdir(parents=True, exist_ok=True)
        run_logged(step, command, log, lambda line, s=step, f=fraction: report(s, f, line),
                   is_canceled, env)
        stamps[step] = fingerprint(commands[step])
        write_stamps(plan, stamps)
        ran.append(step)
    report("verify", (len(STEPS) - 1) / len(STEPS), "verify: importing the engine")
    return run_logged("verify", [str(plan.venv_python), "-c", plan.verify_script], log,
                      lambda line: report("verify", 0.9, line), is_canceled, env)


def run_setup(
    plan: SetupPlan,
    on_progress: Callable[[str, float, str], None] | None = None,
    is_canceled: Callable[[], bool] = lambda: False,
    env: dict | None = None,
) -> SetupResult:
    """Create or repair the venv: steps whose stamp matches are skipped, the check always runs.

    ``on_progress(step, fraction, line)`` sees every output line; raises SetupError (with
    ``log_path``) on the first failing step.
    """
    started = time.monotonic()
    env = clean_env(env)
    report = on_progress or (lambda step, fraction, line: None)
    plan.venv = Path(plan.venv)
    log_path = plan.log_path or plan.venv.with_name(plan.venv.name + "-setup.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    commands = plan.commands()
    ran, skipped = [], []
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n===== Text2Earth engine set-up {time.strftime('%Y-%m-%d %H:%M:%S')} "
                  f"=====\nvenv {plan.venv}, torch: {plan.torch.reason}\n")
        stamps = read_stamps(plan) if venv_works(plan, env) else {}
        for attempt in (1, 2):
            try:
                tail = _run_steps(plan, commands, stamps, ran, skipped, log, report,
                                  is_canceled, env)
                break
            except SetupCancelled as exc:
                exc.log_path = log_path
                log.write("cancelled\n")
                raise
            except SetupError as exc:
                if exc.step in ("torch", "requirements", "engine") and not plan.no_index:
                    exc.output += index_check(plan, exc.step)
                # Installed, yet the engine does not import: a package went missing or broke
                # after its stamp was written. Once more with every install step run again.
                if exc.step == "verify" and attempt == 1 and set(skipped) - {"venv"}:
                    log.write("the check failed with install steps skipped: running them "
                              "again\n")
                    stamps = {k: v for k, v in stamps.items() if k == "venv"}
                    plan.force = True
                    commands = {**plan.commands(), "venv": commands["venv"]}
                    plan.force = False
                    ran.clear()
                    skipped.clear()
                    continue
                exc.log_path = log_path
                log.write(f"FAILED at {exc.step}: {exc}\n")
                raise
        verify = {}
        for line in tail.splitlines():
            if line.startswith("T2E-VERIFY "):
                verify = json.loads(line.removeprefix("T2E-VERIFY "))
        write_stamps(plan, stamps, {"verified": verify})
        log.write(f"done: ran {ran}, skipped {skipped}, {verify}\n")
    report("done", 1.0, "the engine is set up")
    return SetupResult(plan.venv_python, ran, skipped, verify, log_path,
                       time.monotonic() - started)


ENGINE_SOURCE_DIR = "engine_source"  # inside the plugin zip (make package puts it there)


def checkout_root(plugin_dir: Path | None = None) -> Path | None:
    """Where the engine's source and requirements.txt are: the checkout the plugin runs
    from, or the copy that `make package` ships inside the plugin zip."""
    plugin_dir = plugin_dir or Path(__file__).resolve().parents[1]
    for root in (plugin_dir.parent, plugin_dir / ENGINE_SOURCE_DIR):
        if (root / "pyproject.toml").is_file() and (root / "engine").is_dir():
            return root
    return None


def buildable_engine_source(root: Path, work: Path,
                            plugin_dir: Path | None = None) -> Path:
    """A folder pip can build the engine from. The zip ships the engine's source without a
    second copy of the plugin's core (which the engine imports): the plugin's own core is
    put beside it in ``work`` for the build. A checkout is used as it is."""
    if (root / "text2earth_qgis" / "core").is_dir():
        return root
    plugin_dir = plugin_dir or Path(__file__).resolve().parents[1]
    build = work / "source"
    shutil.rmtree(build, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root, build, ignore=skip)
    (build / "text2earth_qgis").mkdir(exist_ok=True)
    shutil.copy2(plugin_dir / "__init__.py", build / "text2earth_qgis" / "__init__.py")
    shutil.copytree(plugin_dir / "core", build / "text2earth_qgis" / "core", ignore=skip)
    return build


def default_venv(data_dir: str | Path) -> Path:
    return Path(data_dir) / "engine-venv"


def make_plan(venv: str | Path, python: str | None = None, torch: str = "auto",
              requirements_file: str | Path | None = None, engine_source: str | None = None,
              index_url: str | None = None, wheels: str | None = None) -> SetupPlan:
    """The set-up for this machine: a Python found or checked, torch chosen for the driver,
    requirements and engine from the checkout unless given."""
    import platform

    root = checkout_root()
    requirements_file = requirements_file or (root / "requirements.txt" if root else None)
    if not requirements_file or not Path(requirements_file).is_file():
        raise SetupError("requirements", "no requirements file: choose the engine's "
                         "requirements.txt (it comes with the engine's source)")
    if not engine_source and root is not None:
        engine_source = str(buildable_engine_source(root, Path(venv).parent / "engine-build"))
    if not engine_source:
        raise SetupError("engine", "the engine's source is not next to the plugin: give its "
                         "folder, wheel or download URL")
    found = find_python(python)
    build = choose_torch_build(sys.platform, platform.machine(), detect_nvidia_driver(), torch)
    return SetupPlan(Path(venv), found.path, read_requirements(Path(requirements_file)), build,
                     engine_source=engine_source, index_url=index_url or None,
                     find_links=[wheels] if wheels else [], no_index=bool(wheels))
