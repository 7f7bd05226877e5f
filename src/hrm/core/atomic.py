"""Atomic file and directory writes: a temporary sibling, fsync, then one rename.

A crash or an exception inside the block leaves the previous file (or nothing), never a
truncated one. A process killed outright (SIGKILL, or SIGTERM outside a training) cannot clean
up: its temporary siblings carry its PID, and the next write of the same path sweeps those whose
process is gone (restoring a folder that was moved aside, if its replacement never arrived).
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hrm.core.errors import DiskFull

F = TypeVar("F", bound=Callable[..., Any])


def _tmp_sibling(dest: Path, tag: str) -> Path:
    return dest.with_name(f".{dest.name}.{tag}-{os.getpid()}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's process
        return True
    return True


def sweep(dest: Path) -> None:
    """Remove the temporary siblings of `dest` left by processes that are gone. A moved-aside old
    folder whose replacement never arrived is put back: it is the last complete version."""
    if not dest.parent.is_dir():
        return
    prefix = f".{dest.name}."
    for leftover in dest.parent.glob(f"{glob.escape(prefix)}*-*.tmp"):
        tag, _, pid = leftover.name[len(prefix):-len(".tmp")].rpartition("-")
        if tag not in ("file", "dir", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if tag == "old" and not (dest.exists() or dest.is_symlink()):
            os.replace(leftover, dest)
        else:
            _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _named(exc: OSError, dest: Path) -> Exception:
    """A full disk (or quota, or a short write: numpy's OSError without errno) becomes DiskFull naming the
    file being written; other errors stay as they are (the CLI names them, hrm.core.errors.storage_error)."""
    return DiskFull(dest) if DiskFull.matches(exc) else exc


# The files of the verb in progress that are written but not yet in place (`together`), by destination;
# and the temporary folders being filled (`atomic_dir`), whose files go in at once, not staged.
_staged: dict[Path, Path] | None = None
_filling: set[Path] = set()


@contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; it replaces `dest` only if the block succeeds (and, inside
    `together`, only once the whole verb has succeeded)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep(dest)
    tmp = _tmp_sibling(dest, "file")
    kept = False
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        if _staged is not None and _filling.isdisjoint(dest.parents):
            _staged[dest], kept = tmp, True
        else:
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
    except OSError as exc:
        raise _named(exc, dest) from None
    finally:
        if not kept:
            _remove(tmp)


def together(verb: F) -> F:
    """Publish every file `verb` writes through atomic_path at once, when it returns: a verb that fails
    or is killed leaves its outputs all old, never half old and half new (its temporary files are
    swept by the next write). Nested calls join the outer one."""
    @functools.wraps(verb)
    def publishing(*args: Any, **kwargs: Any) -> Any:
        global _staged
        if _staged is not None:
            return verb(*args, **kwargs)
        _staged = {}
        try:
            result = verb(*args, **kwargs)
            for dest, tmp in _staged.items():       # the renames, back to back
                try:
                    os.replace(tmp, dest)
                except OSError as exc:
                    raise _named(exc, dest) from None
            for folder in {dest.parent for dest in _staged}:
                _fsync_dir(folder)
            return result
        finally:
            for tmp in _staged.values():
                _remove(tmp)
            _staged = None

    return publishing  # type: ignore[return-value]


@contextmanager
def atomic_dir(dest: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `dest` (a directory) on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep(dest)
    tmp = _tmp_sibling(dest, "dir")
    old = _tmp_sibling(dest, "old")
    _remove(tmp)
    tmp.mkdir()
    _filling.add(tmp)
    try:
        yield tmp
        if dest.exists() or dest.is_symlink():
            os.replace(dest, old)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        raise _named(exc, dest) from None
    finally:
        _filling.discard(tmp)
        _remove(tmp)
        _remove(old)


def write_bytes(dest: Path | str, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: Path | str, text: str) -> None:
    write_bytes(dest, text.encode())


def write_json(dest: Path | str, obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")
