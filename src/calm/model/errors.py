"""Errors of model weights, importable without torch (the command line catches them)."""

from calm.errors import CalmUserError


class CheckpointError(CalmUserError, ValueError):
    """A named checkpoint is missing or cannot be read; says what to pass instead."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs arbitrary pickled objects to load; calm refuses to execute them."""
