"""Typed errors the CLI turns into a one-line message and exit code 2 (never a traceback)."""

from __future__ import annotations


class HrmError(Exception):
    """Bad input from the user: params, data files or arguments. Exit code 2."""

    exit_code = 2


class ConfigError(HrmError):
    """A params file is invalid; the message names the key, the value and what is allowed."""


class DataError(HrmError):
    """A data file is missing, corrupt or malformed; the message names the file."""


class NumericalError(HrmError):
    """A loss became NaN or Inf; the message names the step and the loss terms. Exit code 3."""

    exit_code = 3


class Stopped(HrmError):
    """A run was asked to stop (SIGTERM/SIGINT) and saved a checkpoint. Exit 128 + signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
