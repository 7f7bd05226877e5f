"""`hrm download hrm-checkpoint-*`: the authors' released checkpoints (REFERENCE II.4b) as a data source.

Each lands in data/raw/NAME/ as the authors' folder holds it (`checkpoint`, `all_config.yaml`, and
for ARC the build's `identifiers.json` when the repo ships it), all files or none: they are fetched
into a temporary folder that replaces the old one only when every file is there and matches its
sha256 in the sources lock (recorded on the first fetch, with the hub commit it resolved to).
Sources in order: a local copy (`--from DIR`, then $HRM_DATA_DIR; the folder named NAME or the
repo's own name), then the hub.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from hrm.core import paths
from hrm.core.atomic import atomic_dir, write_json
from hrm.core.errors import DataError
from hrm.data.download import CHUNK, TIMEOUT_S, local_dirs
from hrm.data.puzzles.download import ORIGIN
from hrm.data.puzzles.sources import RELEASED, ReleasedCheckpoint
from hrm.data.sourcelock import recording, verified, verify_or_record
from hrm.data.sources import DATA_DIR_ENV

log = logging.getLogger("hrm")


def _local(ck: ReleasedCheckpoint, dirs: list[Path]) -> Path | None:
    names = (ck.name, ck.repo.split("/")[1])
    return next((d / n for d in dirs for n in names if all((d / n / f).is_file() for f in ck.files)), None)


def _fetch(url: str, dest: Path) -> str:
    """Stream `url` into `dest`; returns the hub commit it resolved to (or "?")."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
        return response.headers.get("X-Repo-Commit") or "?"


def _from_hub(ck: ReleasedCheckpoint, file: str, dest: Path, dirs: list[Path]) -> str | None:
    """One file from the hub: its origin, or None for an optional file the repo lacks."""
    url = ck.url(file)
    try:
        commit = _fetch(url, dest)
    except urllib.error.HTTPError as e:
        if e.code == 404 and file in ck.optional:
            return None
        raise DataError(_unreachable(ck, file, dirs, f"HTTP {e.code}")) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DataError(_unreachable(ck, file, dirs, str(getattr(e, "reason", e)))) from None
    return f"{url} (hub commit {commit})"


def _unreachable(ck: ReleasedCheckpoint, file: str, dirs: list[Path], why: str) -> str:
    searched = ", ".join(str(d) for d in dirs) or f"none (set {DATA_DIR_ENV} or pass --from DIR)"
    return (f"could not get {file} of {ck.repo}@{ck.revision} for {ck.name}: no local copy with "
            f"{' and '.join(ck.files)} (searched {searched}, folders {ck.name}/ or {ck.repo.split('/')[1]}/) and "
            f"{ck.url(file)} failed ({why}). Manual step: download the repo's files on a machine with network "
            f"into FOLDER/{ck.name}/ and run `hrm download {ck.name} --from FOLDER`")


def download(name: str, source: Path | None = None, relock: bool = False) -> Path:
    """Make data/raw/NAME hold the checkpoint's files, verified; returns that folder."""
    ck = RELEASED[name]
    dirs = local_dirs(source)
    local = _local(ck, dirs)
    raw = paths.raw_dir(name)
    if local is None and not relock and all(verified(f"{name}/{f}", raw / f) for f in ck.files):
        log.info("%s: the copy in %s matches the lock; nothing to fetch", name, raw)
        return raw
    origins: dict[str, str] = {}
    with recording(name, relock), atomic_dir(raw) as tmp:
        for file in ck.files + ck.optional:
            if local is not None:
                if not (local / file).is_file():        # an optional file this copy lacks
                    continue
                shutil.copyfile(local / file, tmp / file)
                origin: str | None = str(local / file)
            else:
                origin = _from_hub(ck, file, tmp / file, dirs)
                if origin is None:
                    continue
            verify_or_record(f"{name}/{file}", tmp / file, origin)
            origins[file] = origin
        write_json(tmp / ORIGIN, {"repo": ck.repo, "revision": ck.revision, "files": origins})
    missing = [f for f in ck.optional if f not in origins]
    log.info("%s: %s verified in %s%s", name, ", ".join(origins), raw,
             f" ({', '.join(missing)}: not in the repo)" if missing else "")
    return raw

