"""Download, parsers and build on real MNIST files and generated CIFAR archives."""

from __future__ import annotations

import gzip
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cifar_fixture import make_cifar

from hrm.cli import main
from hrm.core import paths
from hrm.core.errors import DataError
from hrm.data import sources
from hrm.data.build import build, load, statistics
from hrm.data.download import download, file_digest
from hrm.data.formats import IDX_IMAGES_MAGIC, read_cifar, read_idx

# ------------------------------------------------------------------ MNIST (real files)

def test_mnist_download_from_local_copy_then_build(project: Path, mnist_dir: Path) -> None:
    assert main(["download", "mnist", "--from", str(mnist_dir)]) == 0
    raw = paths.raw_dir("mnist")
    for f in sources.MNIST_FILES.values():
        assert file_digest(raw / f.name) == f.md5
    assert not list(raw.glob(".*tmp"))
    assert main(["build", "mnist"]) == 0
    data = load("mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == np.uint8 and data.train_y.dtype == np.int64
    assert np.bincount(data.train_y).tolist()[:3] == [5923, 6742, 5958]   # published class counts
    # One global statistic from the train split only, pixels / 255, std + 1e-6.
    x = np.asarray(data.train_x, dtype=np.float64) / 255
    assert data.mean[0] == pytest.approx(x.mean(), abs=1e-6) == pytest.approx(0.1307, abs=1e-4)
    assert data.std[0] == pytest.approx(x.std() + 1e-6, abs=1e-6) == pytest.approx(0.3081, abs=1e-4)


def test_hrm_data_dir_env_is_an_offline_source(project: Path, mnist_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HRM_DATA_DIR", str(mnist_dir.parent))   # finds DIR/mnist/<file>
    download("mnist")
    assert (paths.raw_dir("mnist") / "t10k-labels-idx1-ubyte.gz").is_file()


def test_idx_parser_rejects_wrong_magic_and_truncation(tmp_path: Path, mnist_dir: Path) -> None:
    real = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC).shape == (10000, 28, 28)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(real[:-100]))
    with pytest.raises(DataError, match=r"bad.gz: IDX body has"):
        read_idx(bad, IDX_IMAGES_MAGIC)
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + real[4:]))
    with pytest.raises(DataError, match=r"bad.gz: IDX magic number 2049, expected 2051"):
        read_idx(bad, IDX_IMAGES_MAGIC)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"bad.gz: not a readable gzip"):
        read_idx(bad, IDX_IMAGES_MAGIC)


# ------------------------------------------------------------------ checksums and atomicity

def _fake_source(monkeypatch: pytest.MonkeyPatch, dataset: str, archive: Path, urls: tuple[str, ...]) -> None:
    remote = sources.RemoteFile(archive.name, urls, file_digest(archive))
    spec = sources.DATASETS[dataset]
    monkeypatch.setitem(sources.DATASETS, dataset, type(spec)(**{**spec.__dict__, "files": (remote,)}))


def test_local_copy_with_wrong_md5_names_file_and_hashes(project: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "store" / "cifar-10-python.tar.gz"
    good.parent.mkdir()
    make_cifar(good, "cifar10")
    _fake_source(monkeypatch, "cifar10", good, ("http://127.0.0.1:9/none",))
    expected = file_digest(good)
    good.write_bytes(good.read_bytes()[:-50])     # truncate the local copy
    with pytest.raises(DataError) as err:
        download("cifar10", good.parent)
    msg = str(err.value)
    assert str(good) in msg and expected in msg and file_digest(good) in msg
    assert not paths.raw_dir("cifar10").exists() or not any(paths.raw_dir("cifar10").iterdir())


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a folder (the real download code path, no outside network)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root
    server.shutdown()


def test_network_download_verifies_and_places_atomically(project: Path, tmp_path: Path, http_dir,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = http_dir
    archive = root / "cifar-100-python.tar.gz"
    arrays = make_cifar(archive, "cifar100")
    dead = "http://127.0.0.1:9/cifar-100-python.tar.gz"      # first mirror refuses: the next is tried
    _fake_source(monkeypatch, "cifar100", archive, (dead, base + archive.name))
    assert main(["download", "cifar100"]) == 0
    assert file_digest(paths.raw_dir("cifar100") / archive.name) == file_digest(archive)
    assert main(["build", "cifar100"]) == 0
    data = load("cifar100")
    assert np.array_equal(data.train_x.reshape(len(data.train_x), -1), arrays["train_x"])
    assert np.array_equal(data.test_y, arrays["test_y"])
    assert data.label_names[:2] == ("class0", "class1")


def test_truncated_transfer_is_a_checksum_error_leaving_nothing(project: Path, http_dir,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    base, root = http_dir
    archive = root / "cifar-10-python.tar.gz"
    make_cifar(archive, "cifar10")
    _fake_source(monkeypatch, "cifar10", archive, (base + archive.name,))
    expected = file_digest(archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])   # server sends half
    assert main(["download", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert "md5" in err and expected in err and file_digest(archive) in err
    raw = paths.raw_dir("cifar10")
    assert not any(raw.iterdir()), list(raw.iterdir())      # no partial or temporary file


def test_no_network_no_copy_names_url_and_manual_step(project: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    remote = sources.RemoteFile("cifar-10-python.tar.gz", ("http://127.0.0.1:9/cifar-10-python.tar.gz",),
                                sources.CIFAR10_FILE.md5)
    spec = sources.DATASETS["cifar10"]
    monkeypatch.setitem(sources.DATASETS, "cifar10", type(spec)(**{**spec.__dict__, "files": (remote,)}))
    assert main(["download", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert remote.urls[0] in err and "--from FOLDER" in err and "HRM_DATA_DIR" in err


# ------------------------------------------------------------------ CIFAR parsing and statistics

def test_cifar10_parser_reads_the_pickle_layout(tmp_path: Path) -> None:
    archive = tmp_path / "c10.tar.gz"
    arrays = make_cifar(archive, "cifar10", n_train=50, n_test=10)
    s = read_cifar(archive, "cifar10")
    assert s.train_x.shape == (50, 3, 32, 32)
    # Row layout: 1024 red, then green, then blue, each row-major.
    assert np.array_equal(s.train_x[3, 1].ravel(), arrays["train_x"][3, 1024:2048])
    assert np.array_equal(s.train_y, arrays["train_y"]) and len(s.label_names) == 10


def test_corrupt_cifar_archive_names_file(tmp_path: Path) -> None:
    archive = tmp_path / "c10.tar.gz"
    make_cifar(archive, "cifar10")
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DataError, match="c10.tar.gz"):
        read_cifar(archive, "cifar10")


def test_per_channel_statistics_use_train_only() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 3, 4, 4), dtype=np.uint8)
    mean, std = statistics(x, "per_channel", 255)
    for c in range(3):
        assert mean[c] == pytest.approx((x[:, c] / 255).mean(), rel=1e-6)
        assert std[c] == pytest.approx((x[:, c] / 255).std() + sources.STD_EPS, rel=1e-6)
    g_mean, g_std = statistics(x, "global", 255)
    assert np.allclose(g_mean, (x / 255).mean()) and np.allclose(g_std, (x / 255).std() + 1e-6)


def test_digits_build_is_fixed_and_offline(project: Path) -> None:
    assert main(["download", "digits"]) == 0 and main(["build", "digits"]) == 0
    meta = json.loads((paths.built_dir("digits") / "meta.json").read_text())
    spec = sources.DATASETS["digits"]
    assert (meta["train_size"], meta["test_size"]) == (spec.train_size, spec.test_size)
    first = np.load(paths.built_dir("digits") / "test_y.npy")
    shutil.rmtree(paths.built_dir("digits"))
    build("digits")
    assert np.array_equal(first, np.load(paths.built_dir("digits") / "test_y.npy"))   # same split every time
