"""`hrm download DATASET`: fetch, md5-verify and atomically place the raw files (REFERENCE III).

Order of sources for each file: the copy already in data/raw (if its md5 matches), a local folder
(`--from DIR`, then $HRM_DATA_DIR), then the network mirrors. Nothing unverified is ever left in
data/raw: bytes stream into a temporary file that is renamed only after its md5 matches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from hrm.core import paths
from hrm.core.atomic import atomic_path
from hrm.core.errors import ConfigError, DataError
from hrm.core.progress import Progress
from hrm.data.formats import write_digits
from hrm.data.sources import DATA_DIR_ENV, DATASETS, RemoteFile

log = logging.getLogger("hrm")
CHUNK = 1 << 20
TIMEOUT_S = 30


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """The file's digest, read in chunks (a checkpoint is ~100 MB): md5 for the image sources' checksums,
    sha256 for the sources lock (hrm.data.sourcelock)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def local_dirs(source: Path | None) -> list[Path]:
    dirs = [source] if source is not None else []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]))
    return dirs


def _find_local(remote: RemoteFile, dataset: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / remote.name, d / dataset / remote.name):
            if candidate.is_file():
                return candidate
    return None


def _copy_verified(src: Path, dest: Path, md5: str) -> None:
    got = file_digest(src)
    if got != md5:
        raise DataError(f"{src}: md5 {got} does not match the expected {md5} (corrupt or a different "
                        f"version); nothing was written to {dest.parent}")
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _fetch_url(url: str, dest: Path, md5: str) -> None:
    """Stream `url` into a temporary file, hashing as it goes; rename only if the md5 matches."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, atomic_path(dest) as tmp:
        total = int(response.headers.get("Content-Length") or 0)
        digest = hashlib.md5()
        with open(tmp, "wb") as out, Progress(total // CHUNK + 1, f"download {dest.name}", "MiB") as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                digest.update(block)
                out.write(block)
                bar.advance(1)
        if digest.hexdigest() != md5:
            raise DataError(f"{url}: downloaded file has md5 {digest.hexdigest()}, expected {md5} "
                            f"(truncated or corrupted transfer); nothing was written to {dest.parent}")


def fetch(remote: RemoteFile, dataset: str, dest: Path, dirs: list[Path]) -> str:
    """Place one verified file at `dest`; returns where it came from."""
    if dest.is_file() and file_digest(dest) == remote.md5:
        return "already present"
    local = _find_local(remote, dataset, dirs)
    if local is not None:
        _copy_verified(local, dest, remote.md5)
        return str(local)
    failures = []
    for url in remote.urls:
        try:
            _fetch_url(url, dest, remote.md5)
            return url
        except DataError as exc:
            failures.append(str(exc))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
    searched = ", ".join(str(d) for d in dirs) or f"none (set {DATA_DIR_ENV} or pass --from DIR)"
    raise DataError(
        f"could not get {remote.name} for {dataset}: no verified local copy (searched: {searched}) and "
        f"no mirror worked ({'; '.join(failures)}). Manual step: download {remote.urls[0]} on a machine "
        f"with network, then put it in a folder and run `hrm download {dataset} --from FOLDER` "
        f"(expected md5 {remote.md5})")


def download(dataset: str, source: Path | None = None, relock: bool = False) -> Path:
    """Make data/raw/DATASET complete and verified; returns that folder."""
    if relock:
        raise ConfigError(f"download {dataset} --relock: the image data sets are pinned by md5 in "
                          "hrm/data/sources.py, not by the sources lock; there is nothing to relock")
    spec = DATASETS[dataset]
    raw = paths.raw_dir(dataset)
    raw.mkdir(parents=True, exist_ok=True)
    if spec.kind == "digits":
        write_digits(raw)
        log.info("digits: wrote scikit-learn's embedded 8x8 digits to %s", raw)
        return raw
    dirs = local_dirs(source)
    for remote in spec.files:
        origin = fetch(remote, dataset, raw / remote.name, dirs)
        log.info("%s: %s verified (md5 %s) from %s", dataset, remote.name, remote.md5, origin)
    return raw
