"""Typed errors the CLI turns into a one-line message and an exit code (never a traceback)."""

from __future__ import annotations

import errno
from pathlib import Path


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


class DiskFull(HrmError):
    """A write ran out of space (or quota). Exit code 4. Nothing was half-written: rerun once space is freed."""

    exit_code = 4
    ERRNOS = (errno.ENOSPC, errno.EDQUOT)

    @classmethod
    def matches(cls, exc: OSError) -> bool:
        """ENOSPC/EDQUOT, or a short write (numpy's `N requested and M written`, an OSError without errno)."""
        return exc.errno in cls.ERRNOS or (exc.errno is None and "requested and" in str(exc))

    def __init__(self, path: Path | str) -> None:
        super().__init__(f"{path}: no space left on the device; free some space there (or point the data/results "
                         f"folders elsewhere), then run the same command again: nothing was half-written and "
                         f"finished work is kept")


class NotWritable(HrmError):
    """A read-only file system or a folder without write permission. Exit code 4, like a full disk."""

    exit_code = 4
    ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(f"{path}: cannot write here ({why}); make the folder writable (or point the data/results "
                         f"folders elsewhere), then run the same command again: finished work is kept")


def storage_error(exc: OSError, where: str) -> HrmError | None:
    """The one-line error of an OSError the storage caused (full, short write, read-only), or None."""
    path = exc.filename or where
    if DiskFull.matches(exc):
        return DiskFull(path)
    if exc.errno in NotWritable.ERRNOS:
        return NotWritable(path, exc.strerror or str(exc))
    return None
