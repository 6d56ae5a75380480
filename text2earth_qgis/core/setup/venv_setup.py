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
where it stopped instead of starting over. The check at the end imports torch and the
engine; when that fails it says which package broke, and only the step that installs it is
redone (a repair), never torch and every requirement again.
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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..contract.child_process import NO_WINDOW, clean_env
from ..contract.gpu_driver import detect_nvidia_driver
from ..service.engine_manager import venv_python
from ..service.http_open import open_http

MIN_PYTHON = (3, 10)
# Newest first among those torch has long had wheels for; newer ones only if nothing else.
PREFERRED_PYTHONS = [(3, 12), (3, 11), (3, 10), (3, 13)]
STAMP_FILE = "text2earth-setup.json"
TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")
TORCH_INDEX = "https://download.pytorch.org/whl/"
# (minimum NVIDIA driver major version on Linux/Windows, torch CUDA wheel tag), newest first.
CUDA_BUILDS = [(580, "cu130"), (570, "cu128"), (560, "cu126")]
STEPS = ("venv", "torch", "requirements", "engine", "verify")
ENGINE_DIST = "text2earth-engine"  # pyproject's name: what the engine step installs
ENGINE_MODULES = ("engine", "text2earth_qgis")
# Run in the engine's venv with the pins (JSON) and the modules to import: reports what is
# missing or of another version, and which distribution the failing import belongs to (the
# missing module's own, else the deepest installed file in the traceback).
VERIFY_SCRIPT = r"""
import importlib, importlib.metadata as md, json, os, sys, traceback
pins, modules = json.loads(sys.argv[1]), sys.argv[2:]
report = {"missing": [], "mismatched": [], "error": "", "missing_module": "", "owners": []}
for name, version in pins.items():
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        report["missing"].append(name)
        continue
    if version and have.split("+")[0] != version:
        report["mismatched"].append(name + " " + have)
def owners(exc):
    tops = [(getattr(exc, "name", None) or "").split(".")[0]]
    sites = [os.path.normcase(p) for p in sys.path if p.endswith("site-packages")]
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = os.path.normcase(frame.filename)
        inside = [path[len(site) + 1:] for site in sites if path.startswith(site + os.sep)]
        if inside:
            tops.append(inside[0].split(os.sep)[0].removesuffix(".py"))
            break
    dists = md.packages_distributions()
    for top in tops:
        if top in dists:
            return [name + "==" + md.version(name) for name in dists[top]]
    return []
for module in modules:
    try:
        importlib.import_module(module)
    except BaseException as exc:
        traceback.print_exc()
        report.update(error=(type(exc).__name__ + ": " + str(exc))[:300],
                      missing_module=getattr(exc, "name", None) or "", owners=owners(exc))
        break
else:
    import torch
    report.update(torch=torch.__version__, cuda=torch.version.cuda,
                  cuda_available=bool(torch.cuda.is_available()))
print("T2E-VERIFY " + json.dumps(report))
"""
VERIFY_MODULES = ("torch", "engine.cli")


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
            encoding="utf-8", errors="replace", timeout=timeout, creationflags=NO_WINDOW,
            env=clean_env())
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


def _glob(folder: Path, pattern: str) -> list[str]:
    return [str(p) for p in sorted(folder.glob(pattern), reverse=True)]


def python_candidates(platform: str = sys.platform, which: Callable = shutil.which,
                      base_prefix: str = sys.base_prefix, env: Mapping | None = None,
                      root: str | Path = "/") -> list[str]:
    """Interpreters worth probing, most specific first, without duplicates.

    QGIS is started from the desktop, not a shell: its PATH rarely holds the Pythons a user
    installed (macOS gives apps /usr/bin:/bin only), so the usual install places are looked
    at too. ``root`` stands for the file system's root, ``env`` for the environment (a test
    passes a folder shaped like a real install)."""
    env = os.environ if env is None else env
    root = Path(root)
    names = [f"python{major}.{minor}" for major, minor in PREFERRED_PYTHONS] + [
        "python3", "python"]
    found = [which(name) for name in names]
    if platform == "win32":
        # WindowsApps holds the Microsoft Store's stand-ins: they open the Store, not Python.
        found = [p for p in found if p and "windowsapps" not in p.lower()]
        # QGIS's own (its sys.executable is qgis-bin.exe): a base for the venv only.
        found.append(str(Path(base_prefix) / "python.exe"))
        if env.get("LOCALAPPDATA"):  # python.org per user; the Python install manager
            local = Path(env["LOCALAPPDATA"])
            found += _glob(local / "Programs" / "Python", "Python3*/python.exe")
            found += _glob(local / "Python", "pythoncore-3.*/python.exe")
        for key in ("ProgramFiles", "ProgramW6432"):  # python.org for all users
            if env.get(key):
                found += _glob(Path(env[key]), "Python3*/python.exe")
    elif platform == "darwin":
        # Apple's /usr/bin/python3 is 3.9, and without the developer tools a stub that pops
        # up their installer: never probed.
        found = [p for p in found if p and Path(p) != root / "usr/bin/python3"]
        found.append(str(Path(base_prefix) / "bin" / "python3"))  # QGIS.app's own
        apps = root / "Applications"
        found += _glob(apps, "QGIS*.app/Contents/MacOS/bin/python3")
        found += _glob(apps, "QGIS*.app/Contents/Frameworks/Python.framework/Versions/3.*/"
                             "bin/python3")
        found += _glob(root / "Library/Frameworks/Python.framework/Versions", "3.*/bin/python3")
        for brew in (root / "opt/homebrew", root / "usr/local"):  # Apple silicon, Intel
            found += _glob(brew / "opt", "python@3.*/bin/python3")
            found.append(str(brew / "bin" / "python3"))
    else:
        found.append(str(Path(base_prefix) / "bin" / "python3"))
    seen, out = set(), []
    for path in found:
        if not path or not Path(path).is_file():
            continue
        key = os.path.normcase(os.path.realpath(path))
        if key not in seen:
            seen.add(key)
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
        # No advice to install a driver: most machines without one have no NVIDIA GPU.
        return TorchBuild("cpu", TORCH_INDEX + "cpu", "no NVIDIA GPU driver found: the CPU build")
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


def usual_index_torch(platform: str, machine: str, build: TorchBuild) -> TorchBuild:
    """The torch pip's usual index (PyPI or its mirror) gives, for when torch's own index
    cannot be reached: on Linux x86-64 that is the CUDA build (about 4 GB more, and it runs
    on the CPU too), elsewhere the CPU (or Apple MPS) build."""
    host = TORCH_INDEX.split("/")[2]
    if platform.startswith("linux") and machine.lower() in ("x86_64", "amd64"):
        kind, what = "cuda", "on Linux that is the CUDA build, which also runs on the CPU"
    else:
        kind, what = build.kind if platform == "darwin" else "cpu", "the CPU build"
    reason = (f"{build.reason.split(':')[0]}; torch's own index ({host}) cannot be reached "
              f"from here, so torch comes from your usual package index: {what}")
    return TorchBuild(kind, None, reason)


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


def pinned_versions(requirements: list[str]) -> dict[str, str]:
    """name -> the exact version pinned ('' for any other specifier); lines with environment
    markers are left out (they may not apply here)."""
    pins = {}
    for line in requirements:
        if ";" in line or "@" in line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==\s*([^\s=*]+)", line)
        pins[requirement_name(line)] = match.group(3) if match else ""
    return pins


def source_digest(*folders: Path) -> str:
    """A digest of the engine's source files: a new plugin version reinstalls the engine even
    where the source folder's path is the same."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.suffix in (".py", ".toml", ".txt", ".json") and "__pycache__" not in \
                    path.parts and path.is_file():
                digest.update(path.relative_to(folder).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


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
    timeout_s: int = 30
    verify_script: str = VERIFY_SCRIPT
    log_path: Path | None = None
    # The shipped engine source (no copy of the plugin's core): engine_source is then a
    # folder inside the venv that the engine step fills from it and the plugin's core.
    engine_build_from: Path | None = None
    plugin_dir: Path | None = None
    engine_digest: str = ""
    python_version: tuple[int, ...] = ()
    platform: str = sys.platform

    @property
    def venv_python(self) -> Path:
        return venv_python(self.venv, self.platform)

    @property
    def stamp_path(self) -> Path:
        return self.venv / STAMP_FILE

    def pip_args(self, requirements: list[str], index_url: str | None,
                 force: bool = False) -> list[str]:
        args = [str(self.venv_python), "-m", "pip", "install", "--progress-bar", "off",
                "--disable-pip-version-check", "--no-input", "--retries", str(self.retries),
                "--timeout", str(self.timeout_s)]
        if self.no_index:
            args.append("--no-index")
        elif index_url:
            args += ["--index-url", index_url]
        for link in self.find_links:
            args += ["--find-links", link]
        if force:
            args.append("--force-reinstall")
        return args + requirements

    @property
    def torch_index(self) -> str | None:
        return self.torch.index_url if self.index_url is None else self.index_url

    def commands(self) -> dict[str, list[str]]:
        """Each install step's command line (also its fingerprint)."""
        torch, _ = split_torch(self.requirements)
        return {
            "venv": [self.python, "-m", "venv", str(self.venv)],
            "torch": self.pip_args(["--no-deps", *torch], self.torch_index) if torch else [],
            "requirements": (self.pip_args(self.requirements, self.index_url)
                             if self.requirements else []),
            "engine": (self.pip_args(["--no-deps", self.engine_source], self.index_url)
                       if self.engine_source else []),
        }

    def step_key(self, step: str, command: list[str]) -> str:
        return fingerprint(command + ([self.engine_digest] if step == "engine" else []))

    def repair_commands(self, step: str, lines: list[str]) -> list[list[str]]:
        """A repair of one step: only the broken packages, reinstalled without their
        dependencies (a forced torchvision must not pull another torch build), then the
        step's usual command to put back anything missing (quick: the rest is there)."""
        usual = self.commands()[step]
        if step == "torch":
            return [self.pip_args(["--no-deps", *lines], self.torch_index, force=True)]
        if step == "engine":
            return [self.pip_args(["--no-deps", self.engine_source], self.index_url,
                                  force=True)] if self.engine_source else []
        forced = [self.pip_args(["--no-deps", *lines], self.index_url, force=True)] \
            if lines else []
        return forced + ([usual] if usual else [])


def fingerprint(command: list[str]) -> str:
    """What a step's stamp records: its command."""
    return hashlib.sha256(json.dumps(command).encode()).hexdigest()[:16]


def read_stamps(plan: SetupPlan) -> dict:
    try:
        data = json.loads(plan.stamp_path.read_text(encoding="utf-8"))
        return data.get("steps", {}) if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_stamps(plan: SetupPlan, steps: dict, extra: dict | None = None) -> None:
    tmp = plan.stamp_path.with_name(plan.stamp_path.name + ".tmp")
    tmp.write_text(json.dumps({"steps": steps, "torch_build": asdict(plan.torch),
                               **(extra or {})}, indent=1), encoding="utf-8")
    os.replace(tmp, plan.stamp_path)


def unreachable_reason(url: str, timeout: float = 8.0) -> str:
    """'' when a package index answers (any HTTP status), else why it cannot be reached."""
    try:
        with open_http(url, timeout=timeout):
            return ""
    except urllib.error.HTTPError:
        return ""  # it answered: reachable
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", None) or exc) or type(exc).__name__


def index_check(plan: SetupPlan, step: str, timeout: float = 8.0) -> str:
    """A line on whether the step's package index answers: pip, told to retry little, may
    only say "no matching distribution" when the index was never reached."""
    url = plan.index_url or (plan.torch.index_url if step == "torch" else None) \
        or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"
    reason = unreachable_reason(url, timeout)
    return (f"\nindex check: {url} is unreachable (Failed to establish a new connection: "
            f"{reason})") if reason else ""


def run_logged(step: str, args: list[str], log, on_line: Callable[[str], None],
               is_canceled: Callable[[], bool], env: dict, tail_lines: int = 40) -> str:
    """Run one command, every output line to the log and ``on_line``; its last lines back."""
    # A script given with -c is shown by its first line only.
    log.write(f"\n$ {' '.join(a if len(a) < 300 else a.strip()[:60] + '...' for a in args)}\n")
    log.flush()
    try:
        process = subprocess.Popen(  # nosec B603 - pip's list argv, no shell
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, text=True, encoding="utf-8",
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
    if code < 0:  # a signal: the system or another program ended it
        raise SetupError(step, f"{step} step was stopped from outside (signal {-code}): "
                         "run the set-up again", output="\n".join(tail))
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
    repaired: list[str] = field(default_factory=list)  # steps redone after the check failed


def venv_works(plan: SetupPlan, env: dict) -> bool:
    if not plan.venv_python.is_file():
        return False
    try:
        out = subprocess.run(  # nosec B603 - list argv, no shell
            [str(plan.venv_python), "-c", "import sys, pip; print(sys.prefix)"],
            capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=30,
            env=env, creationflags=NO_WINDOW)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


def pending_steps(plan: SetupPlan, env: dict | None = None) -> list[str]:
    """The install steps a run would do now (their stamp missing or from another command)."""
    stamps = read_stamps(plan) if venv_works(plan, clean_env(env)) else {}
    return [step for step, command in plan.commands().items()
            if command and stamps.get(step) != plan.step_key(step, command)]


def prepare_engine_source(plan: SetupPlan) -> None:
    """The shipped engine source plus the plugin's core, where the engine step builds from."""
    if plan.engine_build_from is not None and plan.engine_source:
        buildable_engine_source(plan.engine_build_from, Path(plan.engine_source).parent,
                                plan.plugin_dir)


def check_engine(plan: SetupPlan, log, report: Callable, is_canceled: Callable,
                 env: dict) -> tuple[dict, str]:
    """Import torch and the engine in the venv: the check's report and its output."""
    pins = pinned_versions(plan.requirements)
    if plan.engine_source:
        pins[ENGINE_DIST] = ""
    # -I: the folder QGIS runs in (maybe holding an "engine" folder) is not on sys.path.
    tail = run_logged("verify", [str(plan.venv_python), "-I", "-c", plan.verify_script,
                                 json.dumps(pins), *VERIFY_MODULES], log,
                      lambda line: report("verify", 0.9, line), is_canceled, env)
    for line in reversed(tail.splitlines()):
        if line.startswith("T2E-VERIFY "):
            return json.loads(line.removeprefix("T2E-VERIFY ")), tail
    raise SetupError("verify", "the check of the engine printed no result", output=tail)


def check_failed(result: dict) -> bool:
    return bool(result.get("error") or result.get("missing") or result.get("mismatched"))


def repair_steps(result: dict, requirements: list[str]) -> dict[str, list[str]]:
    """The steps to redo for what the check found broken, each with the requirement lines to
    reinstall: a torch package -> torch; another pinned package (or the installed package a
    failing import belongs to) -> requirements; the engine's own package -> engine. A failure
    that names no package redoes the requirements (puts back what is missing) and the engine."""
    by_name = {requirement_name(line): line for line in requirements}
    named = [requirement_name(n) for n in result.get("missing", [])]
    named += [requirement_name(m) for m in result.get("mismatched", [])]
    named += [requirement_name(owner) for owner in result.get("owners", [])]
    owner_lines = {requirement_name(o): o for o in result.get("owners", [])}
    steps: dict[str, list[str]] = {}
    for name in dict.fromkeys(named):
        if name == ENGINE_DIST:
            steps["engine"] = []
            continue
        step = "torch" if name in TORCH_PACKAGES else "requirements"
        steps.setdefault(step, []).append(by_name.get(name) or owner_lines[name])
    missing_top = (result.get("missing_module") or "").split(".")[0]
    if result.get("error") and not result.get("owners") and missing_top in ENGINE_MODULES:
        steps["engine"] = []
    if result.get("error") and not steps:
        steps = {"requirements": [], "engine": []}
    return {step: steps[step] for step in STEPS if step in steps}  # in install order


def _run_steps(plan: SetupPlan, commands: dict, stamps: dict, ran: list, skipped: list, log,
               report: Callable, is_canceled: Callable, env: dict) -> None:
    for index, step in enumerate(STEPS[:-1]):
        command = commands[step]
        fraction = index / len(STEPS)
        if not command or stamps.get(step) == plan.step_key(step, command):
            skipped.append(step)
            report(step, fraction, f"{step}: already done")
            continue
        report(step, fraction, f"{step}: starting")
        if step == "venv":
            stamps.clear()  # a new venv: nothing that was installed before is there
            if plan.venv.exists():
                command = command[:3] + ["--clear"] + command[3:]
            plan.venv.parent.mkdir(parents=True, exist_ok=True)
        if step == "engine":
            prepare_engine_source(plan)
        run_logged(step, command, log, lambda line, s=step, f=fraction: report(s, f, line),
                   is_canceled, env)
        stamps[step] = plan.step_key(step, commands[step])
        write_stamps(plan, stamps)
        ran.append(step)


def _repair(plan: SetupPlan, steps: dict[str, list[str]], log, report: Callable,
            is_canceled: Callable, env: dict) -> None:
    for step, lines in steps.items():
        what = ", ".join(lines) or "the " + ("engine" if step == "engine" else "requirements")
        log.write(f"the check failed: redoing the {step} step ({what})\n")
        report(step, 0.85, f"{step}: repairing {what}")
        if step == "engine":
            prepare_engine_source(plan)
        for command in plan.repair_commands(step, lines):
            run_logged(step, command, log, lambda line, s=step: report(s, 0.85, line),
                       is_canceled, env)


def not_importable(result: dict, repaired: list[str]) -> str:
    """The verify step's failure message: the import that failed and what was tried."""
    cause = result.get("error") or (
        "not installed: " + ", ".join(result.get("missing", []) + result.get("mismatched", [])))
    tried = f" after a repair of the {', '.join(repaired)} step" if repaired else \
        " after the set-up"
    return f"the engine does not import{tried}: {cause}"


def run_setup(
    plan: SetupPlan,
    on_progress: Callable[[str, float, str], None] | None = None,
    is_canceled: Callable[[], bool] = lambda: False,
    env: dict | None = None,
) -> SetupResult:
    """Create or repair the venv: steps whose stamp matches are skipped, the check always runs;
    when it fails, only the steps that install what it found broken are redone, once.

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
    ran, skipped, repaired = [], [], []
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n===== Text2Earth engine set-up {time.strftime('%Y-%m-%d %H:%M:%S')} "
                  f"=====\nvenv {plan.venv}, torch: {plan.torch.reason}\n")
        stamps = read_stamps(plan) if venv_works(plan, env) else {}
        try:
            _run_steps(plan, commands, stamps, ran, skipped, log, report, is_canceled, env)
            report("verify", (len(STEPS) - 1) / len(STEPS), "verify: importing the engine")
            result, tail = check_engine(plan, log, report, is_canceled, env)
            if check_failed(result):
                steps = repair_steps(result, plan.requirements)
                # A step that has just run would only do the same again.
                if not steps or set(steps) <= set(ran):
                    raise SetupError("verify", not_importable(result, []), output=tail)
                _repair(plan, steps, log, report, is_canceled, env)
                repaired = list(steps)
                result, tail = check_engine(plan, log, report, is_canceled, env)
                if check_failed(result):
                    raise SetupError("verify", not_importable(result, repaired), output=tail)
        except SetupCancelled as exc:
            exc.log_path = log_path
            log.write("cancelled\n")
            raise
        except SetupError as exc:
            if exc.step in ("torch", "requirements", "engine") and not plan.no_index:
                exc.output += index_check(plan, exc.step)
            exc.log_path = log_path
            log.write(f"FAILED at {exc.step}: {exc}\n")
            raise
        verify = {key: result.get(key) for key in ("torch", "cuda", "cuda_available")}
        write_stamps(plan, stamps, {"verified": verify})
        log.write(f"done: ran {ran}, skipped {skipped}, repaired {repaired}, {verify}\n")
    report("done", 1.0, "the engine is set up")
    return SetupResult(plan.venv_python, ran, skipped, verify, log_path,
                       time.monotonic() - started, repaired)


ENGINE_SOURCE_DIR = "engine_source"  # inside the plugin zip (make package puts it there)


def checkout_root(plugin_dir: Path | None = None) -> Path | None:
    """Where the engine's source and requirements.txt are: the checkout the plugin runs
    from, or the copy that `make package` ships inside the plugin zip."""
    plugin_dir = plugin_dir or Path(__file__).resolve().parents[2]
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
    plugin_dir = plugin_dir or Path(__file__).resolve().parents[2]
    build = work / "source"
    shutil.rmtree(build, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root, build, ignore=skip)
    (build / "text2earth_qgis").mkdir(exist_ok=True)
    shutil.copy2(plugin_dir / "__init__.py", build / "text2earth_qgis" / "__init__.py")
    shutil.copytree(plugin_dir / "core", build / "text2earth_qgis" / "core", ignore=skip)
    return build


@dataclass(frozen=True)
class EngineSource:
    source: str  # what pip installs
    build_from: Path | None = None  # the engine folder the plugin's core is added to first
    digest: str = ""


def resolve_engine_source(source: str | None, venv: Path, plugin_dir: Path) -> EngineSource:
    """What the engine step installs. Empty: the engine shipped with the plugin (or the
    checkout it runs from). A folder without the plugin's core (the zip's engine_source, or a
    copy of it) gets the core added in a folder inside the venv; a checkout, a wheel, a URL or
    a package name is installed as it is."""
    folder = Path(source).expanduser() if source else checkout_root(plugin_dir)
    if folder is None:
        raise SetupError("engine", "the engine's source is not next to the plugin: reinstall "
                         "the plugin from its zip, or give the engine's folder, wheel or URL "
                         "under Advanced")
    if source and not folder.is_dir():
        if folder.suffix == ".whl" and not folder.is_file() and "://" not in source:
            raise SetupError("engine", f"the engine wheel {source} does not exist: leave "
                             "Engine source empty to use the engine shipped with the plugin")
        return EngineSource(source)
    if not (folder / "pyproject.toml").is_file() or not (folder / "engine").is_dir():
        raise SetupError("engine", f"{folder} is not the engine's source (it has no "
                         "pyproject.toml and engine folder): leave Engine source empty to "
                         "use the engine shipped with the plugin")
    if (folder / "text2earth_qgis" / "core").is_dir():
        return EngineSource(str(folder), digest=source_digest(folder / "engine",
                                                             folder / "text2earth_qgis"))
    return EngineSource(str(venv / "engine-build" / "source"), folder,
                        source_digest(folder / "engine", plugin_dir / "core"))


def default_venv(data_dir: str | Path) -> Path:
    return Path(data_dir) / "engine-venv"


def make_plan(venv: str | Path, python: str | None = None, torch: str = "auto",
              requirements_file: str | Path | None = None, engine_source: str | None = None,
              index_url: str | None = None, wheels: str | None = None,
              plugin_dir: Path | None = None,
              index_reachable: Callable[[str], str] = unreachable_reason) -> SetupPlan:
    """The set-up for this machine: a Python found or checked, torch chosen for the driver
    (from the usual index when torch's own cannot be reached), requirements and engine
    shipped with the plugin unless given. Changes nothing on disk.

    ``index_reachable(url)`` returns '' when the index answers, else why not."""
    import platform

    plugin_dir = Path(plugin_dir or Path(__file__).resolve().parents[2])
    root = checkout_root(plugin_dir)
    requirements_file = requirements_file or (root / "requirements.txt" if root else None)
    if not requirements_file or not Path(requirements_file).is_file():
        raise SetupError("requirements", "no requirements file: reinstall the plugin from its "
                         "zip (it ships the engine's requirements.txt), or choose one under "
                         "Advanced")
    venv = Path(venv).expanduser()
    source = resolve_engine_source(engine_source, venv, plugin_dir)
    found = find_python(python)
    machine = platform.machine()
    build = choose_torch_build(sys.platform, machine, detect_nvidia_driver(), torch)
    if build.index_url and not index_url and not wheels and index_reachable(build.index_url):
        build = usual_index_torch(sys.platform, machine, build)
    return SetupPlan(venv, found.path, read_requirements(Path(requirements_file)), build,
                     engine_source=source.source, index_url=index_url or None,
                     find_links=[wheels] if wheels else [], no_index=bool(wheels),
                     engine_build_from=source.build_from, plugin_dir=plugin_dir,
                     engine_digest=source.digest, python_version=found.version)
