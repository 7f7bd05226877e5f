"""Parsers for the raw formats: MNIST IDX (gzip), CIFAR python pickles (tar.gz), sklearn digits.

Each returns uint8 images (N, C, H, W) and int64 labels, and turns any malformed input into a
DataError that names the file (and archive member) and what is wrong.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.core.errors import DataError
from hrm.data.sources import CIFAR_LAYOUT, DATASETS, DIGITS_FILE, DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION, MNIST_FILES

IDX_IMAGES_MAGIC = 2051   # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049   # 0x00000801: unsigned bytes, 1 dimension


@dataclass(frozen=True)
class Splits:
    train_x: np.ndarray   # uint8 (N, C, H, W)
    train_y: np.ndarray   # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    label_names: tuple[str, ...]


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzip-compressed IDX file of unsigned bytes, checking magic number and size."""
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run `hrm download`)") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip IDX file ({exc})") from None
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes, too short for an IDX header")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DataError(f"{path}: IDX magic number {got}, expected {magic}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX body has {len(data) - header} bytes, header {dims} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_mnist(raw: Path) -> Splits:
    f = {k: raw / v.name for k, v in MNIST_FILES.items()}
    splits = []
    for part in ("train", "test"):
        x = read_idx(f[f"{part}_images"], IDX_IMAGES_MAGIC)
        y = read_idx(f[f"{part}_labels"], IDX_LABELS_MAGIC)
        if len(x) != len(y):
            raise DataError(f"{f[part + '_labels']}: {len(y)} labels for {len(x)} images in {f[part + '_images']}")
        splits += [x[:, None, :, :].copy(), y.astype(np.int64)]
    return Splits(*splits, label_names=tuple(str(i) for i in range(10)))


class _ArrayUnpickler(pickle.Unpickler):
    """Only what CIFAR pickles contain (dicts, lists, bytes, numpy arrays): no arbitrary callables."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(archive: tarfile.TarFile, member: str, path: Path) -> dict:
    try:
        fh = archive.extractfile(member)
    except KeyError:
        raise DataError(f"{path}: archive has no member {member!r}") from None
    if fh is None:
        raise DataError(f"{path}: member {member!r} is not a file")
    try:
        # The archive's md5 was verified against the canonical one before we get here.
        obj = _ArrayUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # pickle raises many types on garbage
        raise DataError(f"{path}: member {member!r} is not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: member {member!r} holds {type(obj).__name__}, expected a dict")
    return obj


def _cifar_batch(obj: dict, label_key: bytes, member: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if b"data" not in obj or label_key not in obj:
        raise DataError(f"{path}: member {member!r} lacks keys b'data' and {label_key!r}")
    try:
        data = np.asarray(obj[b"data"], dtype=np.uint8)
        labels = np.asarray(obj[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{path}: member {member!r} has non-numeric data or labels ({exc})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: member {member!r} data has shape {data.shape}, expected (N, 3072)")
    if len(labels) != len(data):
        raise DataError(f"{path}: member {member!r} has {len(labels)} labels for {len(data)} images")
    # Rows are 1024 red, 1024 green, 1024 blue values, each row-major: exactly NCHW.
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(path: Path, dataset: str) -> Splits:
    layout = CIFAR_LAYOUT[dataset]
    try:
        archive = tarfile.open(path, "r:gz")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run `hrm download {dataset}`)") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable tar.gz archive ({exc})") from None
    try:
        with archive:
            parts = []
            for split in ("train", "test"):
                batches = [_cifar_batch(_unpickle(archive, m, path), layout["labels"], m, path)
                           for m in layout[split]]
                parts += [np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])]
            meta = _unpickle(archive, layout["meta"], path)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: archive is damaged ({exc})") from None
    names = meta.get(layout["names"])
    classes = DATASETS[dataset].classes
    if not isinstance(names, list) or len(names) != classes:
        raise DataError(f"{path}: {layout['meta']!r} needs {layout['names']!r} with {classes} class names")
    return Splits(*parts, label_names=tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names))


def write_digits(raw: Path) -> Path:
    """Fetch scikit-learn's embedded 8x8 digits (no network) into the raw folder."""
    from sklearn.datasets import load_digits

    from hrm.core.atomic import atomic_path

    digits = load_digits()
    out = raw / DIGITS_FILE
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, images=digits.images.astype(np.uint8), target=digits.target.astype(np.int64))
    return out


def read_digits(raw: Path) -> Splits:
    path = raw / DIGITS_FILE
    try:
        with np.load(path) as z:
            images, target = np.asarray(z["images"], np.uint8), np.asarray(z["target"], np.int64)
        if images.ndim != 3 or images.shape[1:] != (8, 8) or len(target) != len(images):
            raise ValueError(f"images {images.shape}, targets {target.shape}; expected (N, 8, 8) and (N,)")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run `hrm download digits`)") from None
    except Exception as exc:
        raise DataError(f"{path}: not a readable digits archive ({exc})") from None
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images))
    n_test = int(round(len(images) * DIGITS_TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    x = images[:, None, :, :]
    return Splits(x[train], target[train], x[test], target[test], tuple(str(i) for i in range(10)))
