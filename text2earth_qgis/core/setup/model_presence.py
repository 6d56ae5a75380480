"""Whether a local engine will find the real weights, known before it loads them. Stdlib.

The engine loads its model with the first job; until then /health cannot say that it will
fall back to the demo weights. The plugin tells the user beforehand, from the same places
the engine looks: the model setting (a folder, or a hub id in the cache) or the default
model in the Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path

from .model_download import MODELS, cached_snapshot, check_model_folder


def real_weights_present(model: str | None, cache_dir: str | None) -> bool:
    if model and Path(model).expanduser().exists():
        return not check_model_folder(Path(model).expanduser())
    return cached_snapshot(model or MODELS[0], cache_dir or None) is not None


def demo_expected(settings) -> bool:
    """A local engine that will serve the built-in demo weights (pipeline checks)."""
    if settings.url or not settings.demo_fallback:
        return False  # a remote engine says so itself, in /health, once it has loaded
    return not real_weights_present(settings.model, settings.model_cache)
