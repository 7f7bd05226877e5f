"""`hrm build DATASET`: raw files -> uint8 arrays plus normalisation statistics (REFERENCE I.2).

Images stay uint8 on disk (and on the GPU during training); the statistics are those of
pixels / pixel_max over the TRAIN split only: one global mean/std (MNIST, digits) or one per
channel (CIFAR), with STD_EPS added to each std. Output is a folder of .npy files (memory-mappable)
and meta.json, written atomically.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.core import paths
from hrm.core.atomic import atomic_dir
from hrm.core.errors import DataError
from hrm.data.formats import Splits, read_cifar, read_digits, read_mnist
from hrm.data.sources import DATASETS, STD_EPS, Dataset

log = logging.getLogger("hrm")
ARRAYS = ("train_x", "train_y", "test_x", "test_y")


@dataclass(frozen=True)
class ImageData(Splits):
    """A built data set: the splits plus what normalising them needs."""

    mean: np.ndarray      # float32 (C,): per channel (a global statistic is repeated)
    std: np.ndarray       # float32 (C,), STD_EPS included
    pixel_max: int


def read_raw(spec: Dataset) -> Splits:
    raw = paths.raw_dir(spec.name)
    if spec.kind == "idx":
        return read_mnist(raw)
    if spec.kind == "cifar":
        return read_cifar(raw / spec.files[0].name, spec.name)
    return read_digits(raw)


def _validate(spec: Dataset, s: Splits) -> None:
    for split, x, y in (("train", s.train_x, s.train_y), ("test", s.test_x, s.test_y)):
        if x.shape[1:] != spec.image_shape:
            raise DataError(f"{paths.raw_dir(spec.name)}: {split} images have shape {x.shape[1:]}, "
                            f"expected {spec.image_shape}")
        if len(y) and (y.min() < 0 or y.max() >= spec.classes):
            raise DataError(f"{paths.raw_dir(spec.name)}: {split} labels span {y.min()}..{y.max()}, "
                            f"expected 0..{spec.classes - 1}")
        if len(x) == 0:
            raise DataError(f"{paths.raw_dir(spec.name)}: {split} split is empty")
    if s.train_x.max() > spec.pixel_max:
        raise DataError(f"{paths.raw_dir(spec.name)}: pixel value {s.train_x.max()} above {spec.pixel_max}")


def statistics(train_x: np.ndarray, norm: str, pixel_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (+STD_EPS) of train pixels / pixel_max, global or per channel, in float64."""
    channels = train_x.shape[1]
    if norm == "global":
        x = train_x.astype(np.float64) / pixel_max
        mean, std = np.full(channels, x.mean()), np.full(channels, x.std())
    else:
        # One channel at a time: a float64 copy of all of CIFAR at once would be 1.2 GB.
        per = [train_x[:, c].astype(np.float64) / pixel_max for c in range(channels)]
        mean = np.array([p.mean() for p in per])
        std = np.array([p.std() for p in per])
    return mean.astype(np.float32), (std + STD_EPS).astype(np.float32)


def build(dataset: str) -> Path:
    spec = DATASETS[dataset]
    splits = read_raw(spec)
    _validate(spec, splits)
    mean, std = statistics(splits.train_x, spec.norm, spec.pixel_max)
    meta = {"dataset": dataset, "norm": spec.norm, "pixel_max": spec.pixel_max,
            "mean": mean.tolist(), "std": std.tolist(), "std_eps": STD_EPS,
            "train_size": int(len(splits.train_x)), "test_size": int(len(splits.test_x)),
            "image_shape": list(spec.image_shape), "classes": spec.classes,
            "label_names": list(splits.label_names)}
    out = paths.built_dir(dataset)
    with atomic_dir(out) as tmp:
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(splits, name)))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("%s: built %d train / %d test images, mean %s std %s -> %s", dataset, meta["train_size"],
             meta["test_size"], np.round(mean, 4).tolist(), np.round(std, 4).tolist(), out)
    return out


def load(dataset: str) -> ImageData:
    """Load a built data set (memory-mapped arrays)."""
    root = paths.built_dir(dataset)
    try:
        meta = json.loads((root / "meta.json").read_text())
        arrays = {n: np.load(root / f"{n}.npy", mmap_mode="r") for n in ARRAYS}
    except FileNotFoundError as exc:
        raise DataError(f"{root}: built data set missing ({exc.filename}); run `hrm build {dataset}`") from None
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:   # JSONDecodeError is a ValueError
        raise DataError(f"{root}: built data set unreadable ({type(exc).__name__}: {exc}); "
                        f"run `hrm build {dataset}` again") from None
    try:
        data = ImageData(**arrays, mean=np.asarray(meta["mean"], np.float32),
                         std=np.asarray(meta["std"], np.float32), pixel_max=int(meta["pixel_max"]),
                         label_names=tuple(str(n) for n in meta["label_names"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{root}/meta.json: malformed ({type(exc).__name__}: {exc}); "
                        f"run `hrm build {dataset}`") from None
    _check_loaded(root, dataset, data)
    return data


def _check_loaded(root: Path, dataset: str, d: ImageData) -> None:
    """Shapes, dtypes and label range of a built set, so training never indexes garbage."""
    spec = DATASETS[dataset]
    channels = spec.image_shape[0]
    problems = []
    for split, x, y in (("train", d.train_x, d.train_y), ("test", d.test_x, d.test_y)):
        if x.dtype != np.uint8 or x.shape[1:] != spec.image_shape or len(x) == 0:
            problems.append(f"{split}_x is {x.dtype} {x.shape}, expected uint8 (N, {spec.image_shape})")
        elif y.dtype != np.int64 or y.shape != (len(x),):
            problems.append(f"{split}_y is {y.dtype} {y.shape}, expected int64 ({len(x)},)")
        elif y.min() < 0 or y.max() >= spec.classes:
            problems.append(f"{split}_y spans {y.min()}..{y.max()}, expected 0..{spec.classes - 1}")
    if d.mean.shape != (channels,) or d.std.shape != (channels,) or not np.all(d.std > 0) or d.pixel_max <= 0:
        problems.append(f"meta.json statistics malformed (mean {d.mean.shape}, std {d.std.shape})")
    if problems:
        raise DataError(f"{root}: " + "; ".join(problems) + f"; run `hrm build {dataset}` again")


def synthetic(dataset: str, examples: int, seed: int = 0) -> ImageData:
    """Random uint8 images and labels with the data set's shape and training-set size, and `examples` test
    images (for `hrm bench` before the data set is downloaded)."""
    spec = DATASETS[dataset]
    rng = np.random.default_rng(seed)
    c = spec.image_shape[0]

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        return (rng.integers(0, spec.pixel_max + 1, (n, *spec.image_shape), dtype=np.uint8),
                rng.integers(0, spec.classes, n).astype(np.int64))

    (tx, ty), (vx, vy) = split(spec.train_size), split(examples)
    return ImageData(train_x=tx, train_y=ty, test_x=vx, test_y=vy, mean=np.full(c, 0.5, np.float32),
                     std=np.full(c, 0.25, np.float32), pixel_max=spec.pixel_max,
                     label_names=tuple(str(i) for i in range(spec.classes)))
