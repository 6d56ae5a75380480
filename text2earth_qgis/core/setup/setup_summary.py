"""What "Set up engine" will do, said before it starts: how much it downloads and installs,
how long that takes on a typical connection, which torch build and why. Pure functions,
stdlib only; the set-up dialog only shows the text."""

from __future__ import annotations

from dataclasses import dataclass

from ..failure_advice import SETUP, explain

# Measured for the pinned requirements (Python 3.11, Linux x86-64): the CUDA environment is
# 6.3 GB on disk (torch 1.2 GB, its nvidia-* libraries 3.2 GB, triton 0.9 GB), from about
# 3.3 GB of wheels; the CPU torch wheel is 0.18 GB and 0.76 GB installed, the other
# requirements about 1 GB installed from 0.4 GB. Windows' CUDA wheel carries the same
# libraries inside torch; the macOS wheels are smaller still.
SIZES_MB = {  # torch build -> (download, on disk)
    "cpu": (600, 2000),
    "cuda": (3300, 6300),
    "mps": (500, 1500),
}
TYPICAL_MBIT_S = 50  # a typical home or office connection
UNPACK_MB_S = 40  # pip unpacking and compiling bytecode, measured here on 2 cores
CHECK_S = 30  # the venv, the resolver and the final import check


@dataclass(frozen=True)
class Estimate:
    download_mb: int
    disk_mb: int
    seconds: int


def estimate(torch_kind: str, pending: list[str]) -> Estimate:
    """Download, disk and time for the steps still to do (the torch step carries the torch
    share; the requirements step the rest)."""
    download, disk = SIZES_MB.get(torch_kind, SIZES_MB["cuda"])
    torch_download, torch_disk = (download - 400, disk - 1000)
    down = (torch_download if "torch" in pending else 0) + (
        400 if "requirements" in pending else 0)
    on_disk = (torch_disk if "torch" in pending else 0) + (
        1000 if "requirements" in pending else 0)
    seconds = down * 8 / TYPICAL_MBIT_S + on_disk / UNPACK_MB_S + CHECK_S
    return Estimate(down, on_disk, int(seconds))


def size_text(mb: int) -> str:
    return f"{mb / 1000:.1f} GB" if mb >= 950 else f"{round(mb, -1):.0f} MB"


def duration_text(seconds: int) -> str:
    minutes = round(seconds / 60)
    return "under a minute" if minutes < 1 else f"{minutes} minute{'s' * (minutes != 1)}"


def torch_text(kind: str, reason: str) -> str:
    name = {"cpu": "CPU", "cuda": "CUDA (NVIDIA GPU)", "mps": "Apple GPU (MPS)"}.get(kind, kind)
    return f"torch: the {name} build ({reason})."


def plan_summary(torch_kind: str, torch_reason: str, pending: list[str], venv: str,
                 python: str, python_version: tuple[int, ...]) -> str:
    """The text shown before anything starts."""
    version = ".".join(map(str, python_version[:3]))
    where = (f"Into {venv}, a separate environment made from Python {version} ({python}); "
             "QGIS's own Python is left untouched.")
    if not pending:
        return ("The engine in this folder is already set up. Set up checks that it imports "
                "and repairs only what is broken (nothing is downloaded unless something is).\n"
                + where)
    guess = estimate(torch_kind, pending)
    if guess.download_mb:
        what = (f"Downloads about {size_text(guess.download_mb)} and installs about "
                f"{size_text(guess.disk_mb)}: about {duration_text(guess.seconds)} on a "
                f"typical {TYPICAL_MBIT_S} Mbit/s connection.")
    else:
        what = f"Installs the engine: about {duration_text(guess.seconds)}."
    steps = "" if "venv" in pending else f" (still to do: {', '.join(pending)})"
    return (f"{what}{steps}\n{torch_text(torch_kind, torch_reason)}\n{where}")


def failure_message(error: Exception, step: str, log_path=None, output: str = "") -> str:
    """One message for a failed set-up: the cause and the fix, then the log's path.

    A failure found before anything ran (no requirements file, no engine source) is already
    worded as cause and fix; a step's failure goes through the advice rules, and where those
    know no better than "it failed", or the engine does not import, the cause is added."""
    text = str(error).strip() or type(error).__name__
    if log_path is None and step in ("requirements", "engine"):
        return text[0].upper() + text[1:] + "."
    advice = explain(text, SETUP, log_path=log_path, log_tail=output, step=step)
    message = advice.message(with_log=False)
    # Where the rule's advice is general, the cause says what exactly: which Pythons were
    # found and why each cannot serve, or what did not import.
    if advice.kind in ("setup_failed", "engine_not_importable", "broken_python"):
        message += f"\nCause: {text}"
    return message + (f"\nLog: {log_path}" if log_path else "")
