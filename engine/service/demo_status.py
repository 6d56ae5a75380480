"""Whether the service's jobs will run on the built-in demo weights (pipeline checks), said in
/health before the first job loads anything, so a client can warn beforehand."""

from __future__ import annotations

from engine.errors import ModelNotFoundError, Text2EarthError
from engine.model.checkpoint import resolve_checkpoint


def demo_weights_expected(demo_fallback: bool, model: str | None,
                          loaded: list[dict]) -> bool:
    """True when a text-to-image job with the service's default model gets the demo weights.

    ``loaded`` is ModelManager.describe(): a model already loaded answers for itself. Else
    the default model is looked up on this machine only (never a download: /health must
    answer at once); the job itself would still try the hub before falling back.
    """
    if loaded:
        return bool(loaded[0].get("pipeline_check"))
    if not demo_fallback:
        return False  # a missing model fails the job: no demo stand-in
    try:
        resolve_checkpoint(model, offline=True)
    except ModelNotFoundError:
        return True
    except Text2EarthError:
        return False  # a bad --model: the job fails with that message, no demo either
    return False
