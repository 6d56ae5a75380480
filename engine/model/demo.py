"""The built-in demo weights (tiny, random, the real architecture) and how their outputs are
named: a pipeline check, never mistaken for imagery."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from engine.model.user_cache import text2earth_cache

DEMO_VERSION = 1


def demo_checkpoint_dir(inpainting: bool = False) -> Path:
    """The built-in tiny checkpoint (text-to-image or inpainting), written once into the
    user's cache."""
    kind = "demo-inpainting-checkpoint" if inpainting else "demo-checkpoint"
    folder = text2earth_cache() / f"{kind}-v{DEMO_VERSION}"
    if not (folder / "model_index.json").is_file():
        from engine.model.tiny_checkpoint import write_checkpoint

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".demo-"))
        try:
            write_checkpoint(tmp, inpainting=inpainting, seed=1 if inpainting else 0)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race; theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def pipeline_check_path(out: str) -> Path:
    path = Path(out)
    return path.with_name(f"{path.stem}.pipeline-check{path.suffix}")
