"""Generated CIFAR archives in the real pickle layout (the real ones cannot be downloaded here)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from hrm.data.sources import CIFAR_LAYOUT


def make_cifar(path: Path, dataset: str, n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict:
    """Write a tar.gz like cifar-{10,100}-python.tar.gz; returns the arrays it holds."""
    layout = CIFAR_LAYOUT[dataset]
    classes = 10 if dataset == "cifar10" else 100
    rng = np.random.default_rng(seed)
    train_x = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    train_y = rng.integers(0, classes, n_train).tolist()
    test_x = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_y = rng.integers(0, classes, n_test).tolist()
    members = {}
    chunks = np.array_split(np.arange(n_train), len(layout["train"]))
    for member, idx in zip(layout["train"], chunks):
        members[member] = {b"batch_label": b"training", b"data": train_x[idx],
                           layout["labels"]: [train_y[i] for i in idx], b"filenames": [b"x.png"] * len(idx)}
    members[layout["test"][0]] = {b"batch_label": b"testing", b"data": test_x, layout["labels"]: test_y}
    members[layout["meta"]] = {layout["names"]: [f"class{i}".encode() for i in range(classes)]}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return {"train_x": train_x, "train_y": np.array(train_y), "test_x": test_x, "test_y": np.array(test_y)}
