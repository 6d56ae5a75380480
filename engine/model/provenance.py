"""What an output records of the model that made it: a hub id as it is, a local folder by its
name only (never the user's path, which names their account and disk layout)."""

from __future__ import annotations

from pathlib import Path


def public_model_id(model_id: str) -> str:
    from engine.model.checkpoint import is_local_path

    if not model_id or not is_local_path(model_id):
        return model_id
    return Path(model_id).expanduser().absolute().name
