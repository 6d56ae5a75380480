"""The samplers a job may name: the one list the CLI, the service and the pipeline share.

Stdlib only at import (the diffusers classes are looked up when a scheduler is made), so the
CLI can build its --help and the service its schema without loading torch. The names and the
default come from the plugin's stdlib contract (text2earth_qgis.core.contract.samplers), so the dock
offers exactly these.
"""

from __future__ import annotations

from engine.errors import InputError
from text2earth_qgis.core.contract import samplers

# name -> (diffusers scheduler class, overrides of the checkpoint's scheduler config)
CLASSES: dict[str, tuple[str, dict]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
}
SCHEDULERS = {name: CLASSES[name] for name in samplers.SCHEDULERS}  # KeyError at import if not
SCHEDULER_NAMES: tuple[str, ...] = samplers.SCHEDULERS
DEFAULT_SCHEDULER = samplers.DEFAULT_SCHEDULER


def check_scheduler(name: str) -> str:
    """``name`` if it is one of ours, else InputError listing the choices."""
    if name not in SCHEDULERS:
        raise InputError(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}")
    return name


def make_scheduler(name: str, config: dict):
    """A fresh diffusers scheduler ``name`` built from a checkpoint's scheduler ``config``."""
    from diffusers import schedulers

    class_name, overrides = SCHEDULERS[check_scheduler(name)]
    return getattr(schedulers, class_name).from_config(config, **overrides)
