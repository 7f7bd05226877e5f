"""Typed errors the CLI turns into a one-line message and exit code 2 (never a traceback)."""

from __future__ import annotations


class HrmError(Exception):
    """Bad input from the user: params, data files or arguments. Exit code 2."""

    exit_code = 2


class ConfigError(HrmError):
    """A params file is invalid; the message names the key, the value and what is allowed."""


class DataError(HrmError):
    """A data file is missing, corrupt or malformed; the message names the file."""
