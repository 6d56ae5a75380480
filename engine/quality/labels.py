"""Zero-shot scene labels per window of a raster, with Git-RSCLIP.

Each window of the model's input size (engine.quality.scoring's windows) is scored against
every label in a prompt template; its label is the one with the highest probability
(sigmoid(logits_per_image): SigLIP scores each pair on its own, so probabilities do not sum
to 1 over the labels). The default labels are AID's 30 scene classes (resources/labels/aid.txt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.quality.raster_rgb import GROUP, open_rgb, raster_windows
from text2earth_qgis.core.contract import prompt_library

DEFAULT_LABELS = "aid"  # resources/labels/aid.txt
TEMPLATE = "a remote sensing image of {}."  # the zero-shot prompt around each label
MAX_LABELS = 1000


def labels_dir() -> Path:
    return prompt_library.RESOURCES / "labels"


def read_labels(path: str | Path | None = None) -> list[str]:
    """The labels of a file (one per line, '#' comments); None: the default set."""
    path = Path(path).expanduser() if path else labels_dir() / f"{DEFAULT_LABELS}.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the labels file {path}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    labels = [line.split("#", 1)[0].strip() for line in lines]
    labels = list(dict.fromkeys(label for label in labels if label))
    if len(labels) < 2:
        raise InputError(f"{path} has {len(labels)} label(s): give at least two, one per line")
    if len(labels) > MAX_LABELS:
        raise InputError(f"{path} has {len(labels)} labels; at most {MAX_LABELS}")
    return labels


@dataclass(frozen=True)
class WindowLabel:
    row: int  # pixel offsets and size in the raster
    col: int
    height: int
    width: int
    label: str
    probability: float
    second: str  # the runner-up, to show how sure the first is
    second_probability: float


def check_template(template: str) -> str:
    if template.count("{}") != 1 or template.replace("{}", "").count("{") or \
            template.replace("{}", "").count("}"):
        raise InputError("the label template needs one {} where the label goes (and no other "
                         "braces)")
    return template


def label_raster(rank, path: str | Path, labels: list[str], bands: list[int] | None = None,
                 template: str = TEMPLATE) -> tuple[list[WindowLabel], object]:
    """(the label of every window with mostly valid pixels, the raster's SourceInfo)."""
    check_template(template)
    texts = [template.format(label) for label in labels]
    found = []
    with open_rgb(path, bands) as raster:
        boxes = raster_windows(raster, rank.image_size)
        if not boxes:
            raise InputError(f"{Path(path).name} holds no valid pixels to label")
        for start in range(0, len(boxes), GROUP):
            group = boxes[start : start + GROUP]
            table = rank.probabilities([raster.read(box) for box in group], texts)
            for box, row in zip(group, table, strict=True):
                first, second = np.argsort(-row, kind="stable")[:2]
                found.append(WindowLabel(*box, labels[first], float(row[first]),
                                         labels[second], float(row[second])))
        info = raster.info
    return found, info
