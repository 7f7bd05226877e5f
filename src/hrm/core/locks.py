"""The run folder's lock: one process at a time trains, imports or evaluates a run.

An exclusive flock on RUN_DIR/.lock holding the owner's PID; the kernel drops it when the owner
dies, so a killed process never leaves a run locked. An evaluation holds it too: scoring a model
file while a training of the same run rewrites it would stamp old weights with new params.
"""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from hrm.core import paths
from hrm.core.errors import HrmError

F = TypeVar("F", bound=Callable[..., Any])


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.fd: int | None = None
        self.created = False          # the folder was made for the lock: removed again if it stays empty

    def __enter__(self) -> RunLock:
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise HrmError(f"{self.path.parent}: in use by another run (PID {holder}); wait for it to "
                           f"finish or stop it, then run the same command again") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
        if self.created and [p.name for p in self.path.parent.iterdir()] == [self.path.name]:
            self.path.unlink(missing_ok=True)        # a refused first run leaves no folder behind
            try:
                self.path.parent.rmdir()
            except OSError:
                pass


def holding_run_lock(verb: F) -> F:
    """`verb(params, name, seed)` run under the lock of that run's folder."""
    @functools.wraps(verb)
    def locked(params: Any, name: str, seed: int) -> Any:
        exp = params.experiment(name)
        with RunLock(paths.run_dir(exp.group, name, seed)):
            return verb(params, name, seed)

    return locked  # type: ignore[return-value]
