"""Atomic file and directory writes: a temporary sibling, fsync, then one rename.

A crash or an exception inside the block leaves the previous file (or nothing), never a
truncated one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hrm.errors import DiskFull


def _tmp_sibling(dest: Path, tag: str) -> Path:
    return dest.with_name(f".{dest.name}.{tag}-{os.getpid()}.tmp")


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
    """A full disk (or quota) becomes DiskFull naming the file being written; other errors stay as they are."""
    return DiskFull(dest) if exc.errno in DiskFull.ERRNOS else exc


@contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; it replaces `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(dest, "file")
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        raise _named(exc, dest) from None
    finally:
        _remove(tmp)


@contextmanager
def atomic_dir(dest: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `dest` (a directory) on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(dest, "dir")
    old = _tmp_sibling(dest, "old")
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if dest.exists() or dest.is_symlink():
            os.replace(dest, old)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        raise _named(exc, dest) from None
    finally:
        _remove(tmp)
        _remove(old)


def write_bytes(dest: Path | str, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: Path | str, text: str) -> None:
    write_bytes(dest, text.encode())


def write_json(dest: Path | str, obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")
