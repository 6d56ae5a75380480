"""What the subcommands print on stderr: wrapped notes, a progress bar, quiet libraries, and
the sweep of stopped runs' temp files beside an output."""

from __future__ import annotations

import logging
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path


def say(text: str) -> None:
    print(textwrap.fill(text, width=100), file=sys.stderr)


def quiet_libraries() -> None:
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


@contextmanager
def progress_bar(total: int, label: str, quiet: bool):
    """A step callback drawing a progress bar on stderr (None when quiet)."""
    if quiet:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="step", file=sys.stderr)

    def callback(pipe, step, timestep, tensors):
        bar.update(1)
        return tensors

    try:
        yield callback
    finally:
        bar.close()


def sweep(out: str, quiet: bool) -> None:
    """Remove stale leftovers of our own naming beside the output (killed runs' temp files)."""
    from engine.jobs.leftovers import remove_stale

    folder = Path(out).expanduser().parent
    try:
        removed = remove_stale(folder) if folder.is_dir() else []
    except OSError:
        return
    if removed and not quiet:
        say(f"removed {len(removed)} stale temp file(s) of stopped jobs from {folder}")
