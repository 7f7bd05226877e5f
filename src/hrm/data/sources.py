"""What each data set is and where it comes from (REFERENCE I.2 and III): URLs, md5s, shapes.

These are facts about the data, not hyper-parameters, so they live here and not in params.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Environment variable naming a folder that holds verified copies of the downloads.
DATA_DIR_ENV = "HRM_DATA_DIR"
# Added to every standard deviation before normalising (the author code's guard against 0).
STD_EPS = 1e-6


@dataclass(frozen=True)
class RemoteFile:
    name: str                 # file name on disk and at the end of every URL
    urls: tuple[str, ...]     # mirrors, tried in order
    md5: str


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: Literal["idx", "cifar", "digits"]
    files: tuple[RemoteFile, ...]
    image_shape: tuple[int, int, int]   # (C, H, W)
    classes: int
    norm: Literal["global", "per_channel"]   # one mean/std, or one per channel
    pixel_max: int                       # raw pixel range is 0..pixel_max
    train_size: int
    test_size: int


_MNIST_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


def _mnist(name: str, md5: str) -> RemoteFile:
    return RemoteFile(name, tuple(m + name for m in _MNIST_MIRRORS), md5)


MNIST_FILES = {
    "train_images": _mnist("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": _mnist("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": _mnist("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": _mnist("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}

CIFAR10_FILE = RemoteFile("cifar-10-python.tar.gz",
                          ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                          "c58f30108f718f92721af3b95e74349a")
CIFAR100_FILE = RemoteFile("cifar-100-python.tar.gz",
                           ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                           "eb9058c3a382ffc7106e4002c42a8d85")

# Members of the CIFAR archives, in the real pickle layout; label key differs (CIFAR-100 uses fine labels).
CIFAR_LAYOUT = {
    "cifar10": {"train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
                "test": ("cifar-10-batches-py/test_batch",), "meta": "cifar-10-batches-py/batches.meta",
                "labels": b"labels", "names": b"label_names"},
    "cifar100": {"train": ("cifar-100-python/train",), "test": ("cifar-100-python/test",),
                 "meta": "cifar-100-python/meta", "labels": b"fine_labels", "names": b"fine_label_names"},
}

# scikit-learn's 8x8 digits have no official split: a fixed, seeded 80/20 split defines ours.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
DIGITS_FILE = "digits.npz"

DATASETS: dict[str, Dataset] = {
    "digits": Dataset("digits", "digits", (), (1, 8, 8), 10, "global", 16, 1438, 359),
    "mnist": Dataset("mnist", "idx", tuple(MNIST_FILES.values()), (1, 28, 28), 10, "global", 255, 60000, 10000),
    "cifar10": Dataset("cifar10", "cifar", (CIFAR10_FILE,), (3, 32, 32), 10, "per_channel", 255, 50000, 10000),
    "cifar100": Dataset("cifar100", "cifar", (CIFAR100_FILE,), (3, 32, 32), 100, "per_channel", 255, 50000, 10000),
}
