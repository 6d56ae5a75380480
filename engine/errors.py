"""Errors a user can act on. Each carries one clear line; the CLI prints it and exits non-zero.

``kind`` is a stable key (in the service's job status as ``error_kind``): the plugin's advice
matches on it, never on the wording, which may improve at any time.
"""

from __future__ import annotations


class Text2EarthError(Exception):
    """Base of every error whose message is meant for the user as it stands."""

    exit_code = 1
    kind = "failed"


class InputError(Text2EarthError, ValueError):
    """A request that cannot be honoured: bad extent, CRS, level, size, path."""

    exit_code = 2
    kind = "bad_input"


class ModelNotFoundError(Text2EarthError):
    """No usable weights at the place asked for, locally or on the hub."""

    exit_code = 3
    kind = "missing_model"


class CheckpointError(Text2EarthError):
    """Weights were found but are incomplete, corrupt, or not of a supported kind."""

    exit_code = 3
    kind = "bad_checkpoint"


class GenerationCancelled(Text2EarthError):  # noqa: N818 - a state, not a fault
    """A step callback asked to stop; nothing was written."""

    exit_code = 130
    kind = "cancelled"


class OutOfMemoryError(Text2EarthError):
    exit_code = 4
    kind = "out_of_memory"


class DiskFullError(Text2EarthError):
    """The output's file system ran out of space; nothing was left at the output."""

    exit_code = 5
    kind = "disk_full"


class WriteError(Text2EarthError):
    """Writing or verifying the output failed (other than a full disk); nothing was left."""

    exit_code = 5
    kind = "write_failed"


# Not raised: the kind a service reports for an unexpected exception (a bug to report).
INTERNAL_KIND = "internal"
