"""Errors meant for the person at the keyboard, and the CLI wrapper that shows them.

They live in the torch-free bottom layer, :mod:`common.errors`; this module re-exports them for the
training side's imports (the same classes: ``except train.errors.UserError`` catches them all).
"""

from common.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CheckpointError,
    DataError,
    UserError,
    run_cli,
)

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CheckpointError", "DataError", "UserError",
           "run_cli"]
