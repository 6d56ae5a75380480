"""Errors a user can act on. Each carries one clear line; the CLI prints it and exits non-zero."""

from __future__ import annotations


class Text2EarthError(Exception):
    """Base of every error whose message is meant for the user as it stands."""

    exit_code = 1


class InputError(Text2EarthError, ValueError):
    """A request that cannot be honoured: bad extent, CRS, level, size, path."""

    exit_code = 2


class ModelNotFoundError(Text2EarthError):
    """No usable weights at the place asked for, locally or on the hub."""

    exit_code = 3


class CheckpointError(Text2EarthError):
    """Weights were found but are incomplete, corrupt, or not of a supported kind."""

    exit_code = 3


class GenerationCancelled(Text2EarthError):  # noqa: N818 - a state, not a fault
    """A step callback asked to stop; nothing was written."""

    exit_code = 130


class OutOfMemoryError(Text2EarthError):
    exit_code = 4
