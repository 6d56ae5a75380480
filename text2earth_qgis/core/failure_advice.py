"""Turn what went wrong (a set-up step's output, a service log, a job error) into one message:
what happened and what to do. Pure functions, stdlib only; the first matching rule wins, so
the specific causes come before the generic ones."""

from __future__ import annotations

import re
from dataclasses import dataclass

SETUP, SERVICE, JOB = "setup", "service", "job"


@dataclass(frozen=True)
class Advice:
    kind: str  # a stable key ("index_unreachable", "port_in_use", ...) for tests and the UI
    problem: str  # what happened
    action: str  # what to do
    log_path: str | None = None
    log_tail: str = ""

    def message(self, with_log: bool = True) -> str:
        text = f"{self.problem} {self.action}"
        if with_log and self.log_path:
            text += f"\nLog: {self.log_path}"
        if with_log and self.log_tail:
            text += "\nLast log lines:\n" + self.log_tail
        return text


@dataclass(frozen=True)
class Rule:
    kind: str
    pattern: str
    problem: str
    action: str
    contexts: tuple[str, ...] = (SETUP, SERVICE, JOB)


RERUN = "Run Set up engine again afterwards: the steps already done are kept."
RULES = [
    Rule("no_space", r"No space left on device|Errno 28|ENOSPC|not enough space on the disk",
         "The disk is full.",
         "Free some space (the engine with torch needs about 2 GB, with CUDA about 6.5 GB) or "
         "choose an engine folder on another disk. " + RERUN),
    Rule("certificate", r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSLError",
         "The secure connection to the package index was refused (certificate check).",
         "A company proxy often re-signs HTTPS: ask IT for its certificate and name it in "
         "pip.conf ('cert = ...') or the PIP_CERT variable. " + RERUN, (SETUP,)),
    Rule("index_unreachable",
         r"Failed to establish a new connection|Connection refused|Name or service not known|"
         r"Temporary failure in name resolution|getaddrinfo failed|Network is unreachable|"
         r"No route to host|ProxyError|Read timed out|ConnectTimeoutError|"
         r"Max retries exceeded|connection broken",
         "The package index could not be reached.",
         "Check the internet connection and proxy (pip reads HTTPS_PROXY and pip.conf), or "
         "run the set-up on a connected network. " + RERUN, (SETUP,)),
    Rule("download_corrupt", r"DO NOT MATCH THE HASHES|hash mismatch|BadZipFile",
         "A package download arrived corrupted.", RERUN, (SETUP,)),
    Rule("no_build", r"No matching distribution found|Could not find a version that satisfies",
         "A pinned package has no ready-made build for this Python or system.",
         "Choose a 64-bit Python 3.10, 3.11 or 3.12 in the set-up dialog. " + RERUN, (SETUP,)),
    Rule("must_compile", r"Microsoft Visual C\+\+ 14|command 'gcc' failed|Failed building wheel|"
         r"subprocess-exited-with-error",
         "A package had to be compiled from source, which failed.",
         "There is no ready-made build of it for this Python: choose Python 3.11 or 3.12. "
         + RERUN, (SETUP,)),
    Rule("no_venv_module", r"ensurepip is not available|No module named '?(venv|ensurepip)",
         "This Python cannot create virtual environments.",
         "Install python3-venv (Debian/Ubuntu: sudo apt install python3-venv) or choose "
         "another Python in the set-up dialog.", (SETUP,)),
    Rule("permission", r"Permission denied|Errno 13|Access is denied",
         "There is no permission to write where the engine goes.",
         "Choose an engine folder in your own user space. " + RERUN, (SETUP,)),
    Rule("broken_python", r"cannot run .*python|does not run|not a Python interpreter|"
         r"cannot be used|no Python 3\.10",
         "The Python for the engine does not work.",
         "Choose another Python 3.10 or newer (the python executable itself), or leave the "
         "field empty to let the set-up look for one.", (SETUP,)),
    Rule("dll", r"DLL load failed|WinError 126|WinError 1114|error loading .*\.dll",
         "torch cannot load its libraries.",
         "Install the Microsoft Visual C++ Redistributable (x64), restart QGIS, and run Set up "
         "engine again."),
    Rule("port_in_use", r"already in use|Address already in use|EADDRINUSE|WinError 10048",
         "The engine's port is taken by another program.",
         "Set the engine port to 0 (any free port) or another number, then Connect again.",
         (SERVICE,)),
    Rule("out_of_memory", r"out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED",
         "The GPU ran out of memory.",
         "Choose a smaller extent or a coarser level, close other programs using the GPU, or "
         "set the device to cpu (slower but not limited by GPU memory).", (SERVICE, JOB)),
    Rule("no_gpu_driver", r"no CUDA GPU|Found no NVIDIA driver|CUDA driver version is "
         r"insufficient|NVIDIA driver on your system is too old|no NVIDIA driver",
         "No usable NVIDIA GPU driver.",
         "Install or update the NVIDIA driver and run Set up engine again, or set the device "
         "to cpu (slower).", (SERVICE, JOB)),
    Rule("model_missing", r"are not on this machine|model folder .* does not exist|"
         r"ModelNotFoundError|has no \.safetensors weights",
         "The Text2Earth model weights are missing.",
         "Use Download model… (or copy the weights from another machine and choose their "
         "folder there).", (SERVICE, JOB)),
    Rule("engine_without_core", r"No module named '?text2earth_qgis",
         "The engine's source lacks the plugin's core (text2earth_qgis).",
         "Leave Engine source empty under Advanced (the engine shipped with the plugin is "
         "used), or give a checkout of the whole project. " + RERUN, (SETUP,)),
    Rule("engine_not_importable", r"the engine does not import after",
         "The engine was installed but does not import.",
         "Choose Python 3.11 or 3.12 under Advanced and run Set up engine again; if it still "
         "fails, Copy diagnostics puts the log on the clipboard for a bug report.", (SETUP,)),
    Rule("env_incomplete", r"No module named|ModuleNotFoundError|ImportError",
         "The engine's environment is incomplete.",
         "Run Set up engine…: it repairs the environment without starting over."),
]


# The problems of an engine process that ended: advice already, never read again as a cause.
EXITED_PROBLEMS = ("The engine was killed", "The engine stopped unexpectedly")
# What the GPU rules say when the engine computes on the CPU (its /health device): no GPU
# advice on a machine whose engine does not use one.
CPU_WORDING = {
    "out_of_memory": ("The engine ran out of memory.",
                      "Choose a smaller extent or a coarser level, or close other programs "
                      "to free memory."),
}


def explain(text: str, context: str = SERVICE, returncode: int | None = None,
            log_path: str | None = None, log_tail: str = "", step: str = "",
            exited: bool = False, gpu: bool | None = None) -> Advice:
    """One message for a failure seen in ``context`` (setup, service or job); ``exited``:
    the service process ended (with ``returncode`` when it is known); ``gpu``: whether the
    engine computes on a GPU (None: unknown)."""
    extra = {"log_path": str(log_path) if log_path else None, "log_tail": log_tail}
    haystack = f"{text}\n{log_tail}"
    for rule in RULES:
        if context in rule.contexts and re.search(rule.pattern, haystack, re.IGNORECASE):
            problem, action = rule.problem, rule.action
            if gpu is False and rule.kind in CPU_WORDING:
                problem, action = CPU_WORDING[rule.kind]
            return Advice(rule.kind, problem, action, **extra)
    if context == SETUP:
        return Advice("setup_failed", f"The set-up failed at the {step or 'unknown'} step.",
                      "The log says why; Copy diagnostics puts it on the clipboard for a bug "
                      "report. " + RERUN, **extra)
    if context == SERVICE and (exited or returncode is not None):
        if returncode in (-9, 137):
            return Advice("killed", f"{EXITED_PROBLEMS[0]} (often: the system ran out of "
                          "memory).", "Close other programs or choose a smaller extent, then "
                          "Restart the engine.", **extra)
        code = f" (exit code {returncode})" if returncode is not None else ""
        return Advice("crashed", f"{EXITED_PROBLEMS[1]}{code}.",
                      "Restart it with the Restart button; its last log lines are below.",
                      **extra)
    return Advice("failed", text.strip().splitlines()[0] if text.strip() else "It failed.",
                  "Copy diagnostics puts the details on the clipboard for a bug report.",
                  **extra)


def _rule(kind: str) -> Rule:
    return next(rule for rule in RULES if rule.kind == kind)


# The engine's stable error_kind (engine.errors; the service's job status and 4xx bodies)
# -> advice. Kinds not listed (bad_input, cancelled, ...) are their own best message.
KIND_ADVICE = {
    "out_of_memory": (_rule("out_of_memory").problem, _rule("out_of_memory").action),
    "missing_model": (_rule("model_missing").problem, _rule("model_missing").action),
    "bad_checkpoint": ("The model files are incomplete or damaged.",
                       "Download the model again (Download model…), or choose a complete "
                       "model folder."),
    "disk_full": ("The disk is full.",
                  "Free some space where the outputs go, or choose an output folder on "
                  "another disk; nothing was left half-written."),
    "write_failed": ("The output could not be written.",
                     "Check that the output folder is writable and its disk healthy, then "
                     "run again; nothing was left half-written."),
    "internal": ("The engine hit a bug.",
                 "Copy diagnostics puts the details on the clipboard for a bug report."),
}
# Wording rules that still apply to engines too old to send error_kind.
WORDING_FALLBACK = ("out_of_memory", "no_gpu_driver", "model_missing", "dll", "env_incomplete")


def job_message(text: str, kind: str | None = None, gpu: bool | None = None) -> str:
    """A failed job's message with advice when its cause is one we know, else as it was.

    ``kind`` is the job's ``error_kind``: when the engine sends one, it alone decides (the
    engine's wording may change, and a prompt may contain any words); without one (an older
    engine), the wording rules do. Advice is given once: a message that already carries it
    is returned as it is. ``gpu`` False: the engine computes on the CPU, so no GPU advice."""
    if any(text.startswith(problem) for problem, _ in KIND_ADVICE.values()) or any(
            text.startswith(rule.problem) for rule in RULES) or any(
            text.startswith(problem) for problem, _ in CPU_WORDING.values()) or text.startswith(
            EXITED_PROBLEMS):
        return text
    if kind is not None:
        if kind in KIND_ADVICE:
            problem, action = KIND_ADVICE[kind]
            if gpu is False and kind in CPU_WORDING:
                problem, action = CPU_WORDING[kind]
            return f"{problem} {action}\n({text})"
        return text
    advice = explain(text, JOB, gpu=gpu)
    if advice.kind in WORDING_FALLBACK:
        return f"{advice.problem} {advice.action}\n({text})"
    return text


# Job fields newer than some engines: (what the user asked for, what to do meanwhile).
NEWER_FIELDS = {
    "candidates": ("several variations in one run", "choose 1 variation"),
    "keep_candidates": ("several variations in one run", "choose 1 variation"),
    "init_raster": ("starting from map layers", "untick Start from layers"),
    "strength": ("starting from map layers", "untick Start from layers"),
    "scene_method": ("cascade scenes", "choose another scene method under Advanced"),
}


def older_engine_advice(errors: list | None) -> str | None:
    """When an engine refused a job only for fields it does not know yet (the plugin is newer
    than the engine), one message that says so; None for any other refusal."""
    fields = [e.get("field") for e in errors or [] if isinstance(e, dict)]
    if not fields or any(f not in NEWER_FIELDS for f in fields):
        return None
    asked = list(dict.fromkeys(NEWER_FIELDS[f] for f in fields))
    return ("This engine is older than the plugin: it cannot do "
            + " or ".join(what for what, _ in asked) + " yet. Bring the engine up to "
            "date (Set up engine… in the Engine tab), or meanwhile "
            + " and ".join(todo for _, todo in asked) + ".")
