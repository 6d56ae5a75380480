"""Where torch.compile keeps what it built, so that a later start reuses it, and whether this
machine has already compiled a given model.

Inductor's caches (generated C++/Triton kernels, FX graphs) default to a folder under /tmp,
which a reboot empties: they are pointed at the user's cache instead. A marker per compiled
model (its weights, precision, device, torch version) records that a warm-up finished, which
is what the service reports as "compiling, once" against "compiling from this machine's
cache".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from engine.model.user_cache import text2earth_cache

INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def cache_root() -> Path:
    return text2earth_cache() / "compiled"


def _torch_default() -> str | None:
    """The folder inductor uses when nobody chose one (under /tmp), None where this torch
    does not say."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:
        return None
    return os.path.abspath(default_cache_dir())


def use_persistent_cache() -> Path:
    """Point inductor at the user's cache (unless the user chose a folder); the folder.

    torch writes its own default into the variable the first time anything asks for the
    folder, and importing torch._dynamo (which diffusers does) asks: so a variable holding
    torch's default was not the user's choice, and is replaced too."""
    chosen = os.environ.get(INDUCTOR_CACHE_ENV)
    if not chosen or os.path.abspath(chosen) == _torch_default():
        chosen = os.environ[INDUCTOR_CACHE_ENV] = str(cache_root() / "inductor")
    folder = Path(chosen)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def compile_key(weights_sha256: str, precision: str, device: str, facts: str,
                settings: str) -> str:
    """One compiled model on one machine: what its generated code depends on (``settings``:
    how it is compiled and warmed)."""
    import torch

    text = "\n".join([weights_sha256, precision, device, facts, torch.__version__, settings])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _marker(key: str) -> Path:
    # Beside the kernels it vouches for: a cleared or other inductor folder has no marker.
    return use_persistent_cache() / "text2earth-compiled" / key


def is_compiled(key: str) -> bool:
    return _marker(key).is_file()


def mark_compiled(key: str) -> None:
    """Record that ``key``'s warm-up finished (best effort: a read-only cache only means the
    next start says "once" again)."""
    marker = _marker(key)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass
