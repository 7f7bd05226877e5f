"""Fuzzed bad input: every broken params or data file ends in exit code 2 (CLI) or a typed error
(library) with a message naming the file; never a traceback, a hang or a written output."""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import json
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import real_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hrm.cli import main
from hrm.core import paths
from hrm.core.errors import DataError
from hrm.data.build import load
from hrm.data.formats import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_cifar, read_idx
from hrm.data.sources import CIFAR_LAYOUT

# HRM_FUZZ_EXAMPLES raises the count for a longer local hunt; CI runs 120 per input kind.
FUZZ = settings(max_examples=int(os.environ.get("HRM_FUZZ_EXAMPLES", 120)), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                       | st.text(max_size=12), lambda c: st.lists(c, max_size=4)
                       | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue()


def _snapshot(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


# ------------------------------------------------------------------ params files

def _paths_of(tree: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths_of(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths_of(v, prefix + (i,))
    return out


@st.composite
def broken_params(draw: st.DrawFn) -> dict:
    raw = copy.deepcopy(real_params())
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(_paths_of(raw)[1:]))
        parent = raw
        for key in where[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["replace", "delete", "add", "rename"]))
        if op == "replace":
            parent[where[-1]] = draw(JSONISH)
        elif op == "delete" and isinstance(parent, dict):
            parent.pop(where[-1])
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(JSONISH)
        elif op == "rename" and isinstance(parent, dict):
            parent[f"{where[-1]}x"] = parent.pop(where[-1])
    return raw


@FUZZ
@given(raw=broken_params())
def test_fuzzed_params_structure(tmp_path: Path, raw: dict) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    before = _snapshot(tmp_path)
    for argv in (["--params", str(path), "check"], ["--params", str(path), "describe", "digits-cnn"]):
        rc, err = _cli(argv)
        assert rc in (0, 2), err
        if rc == 2:
            assert str(path) in err and "Traceback" not in err and err.count("\n") == 1, err
    assert _snapshot(tmp_path) == before


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_fuzzed_params_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if text else b"")
    rc, err = _cli(["--params", str(path), "check"])
    assert rc == 2 and str(path) in err and "Traceback" not in err


# ------------------------------------------------------------------ raw data files

def _idx(magic: int, dims: tuple[int, ...], body: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + body


@FUZZ
@given(blob=st.binary(max_size=200), compress=st.booleans(), magic=st.sampled_from([IDX_IMAGES_MAGIC, 2049, 0]),
       dims=st.lists(st.integers(0, 2**32 - 1), max_size=4), cut=st.integers(0, 64))
def test_fuzzed_idx(tmp_path: Path, blob: bytes, compress: bool, magic: int, dims: list[int], cut: int) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    content = _idx(magic, tuple(dims), blob)[: max(len(blob) + 4 - cut, 0)] if compress else blob
    path.write_bytes(gzip.compress(content) if compress else content)
    for expect in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
        try:
            arr = read_idx(path, expect)
        except DataError as exc:
            assert str(path) in str(exc)
        else:   # only a self-consistent file parses
            assert arr.size == len(content) - 4 - 4 * len(arr.shape)


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


@st.composite
def broken_cifar(draw: st.DrawFn) -> bytes:
    layout = CIFAR_LAYOUT["cifar10"]
    kind = draw(st.sampled_from(["random", "truncated", "garbage-member", "wrong-shapes"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    good = {m: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
            for m in layout["train"] + layout["test"]}
    good[layout["meta"]] = pickle.dumps({b"label_names": [b"a"] * 10})
    if kind == "truncated":
        # Cuts inside the last bytes only drop tar padding and the gzip trailer: the members are
        # intact then and parse correctly (the md5 check is what rejects such a file in the pipeline).
        blob = _tar(good)
        return blob[: draw(st.integers(0, len(blob) - 40))]
    victim = draw(st.sampled_from(sorted(good)))
    if kind == "garbage-member":
        good[victim] = draw(st.binary(max_size=100))
    else:
        good[victim] = pickle.dumps(draw(JSONISH.map(lambda v: v if not isinstance(v, dict) else
                                                     {b"data": v, b"labels": v, b"label_names": v})))
    return _tar(good)


@FUZZ
@given(blob=broken_cifar())
def test_fuzzed_cifar_archive(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(blob)
    with pytest.raises(DataError) as err:
        read_cifar(path, "cifar10")
    assert str(path) in str(err.value)


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    layout = CIFAR_LAYOUT["cifar10"]
    path = tmp_path / "c.tar.gz"
    path.write_bytes(_tar({layout["train"][0]: pickle.dumps({b"data": Evil(), b"labels": []})}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        read_cifar(path, "cifar10")


# ------------------------------------------------------------------ built arrays, models, metrics, traces

@pytest.fixture
def built_digits(project: Path) -> Path:
    assert main(["download", "digits"]) == 0 and main(["build", "digits"]) == 0
    return paths.built_dir("digits")


@FUZZ
@given(victim=st.sampled_from(["train_x.npy", "train_y.npy", "test_y.npy", "meta.json"]),
       how=st.sampled_from(["random", "truncate", "json", "array"]), blob=st.binary(max_size=200),
       value=JSONISH, shape=st.lists(st.integers(0, 5), max_size=4), dtype=st.sampled_from(["uint8", "int64", "f4"]))
def test_fuzzed_built_data(built_digits: Path, victim: str, how: str, blob: bytes, value: Any,
                           shape: list[int], dtype: str) -> None:
    path = built_digits / victim
    original = path.read_bytes()
    try:
        if how == "random":
            path.write_bytes(blob)
        elif how == "truncate":
            path.write_bytes(original[: len(original) // 2])
        elif how == "json" and victim == "meta.json":
            path.write_text(json.dumps(value))
        else:
            np.save(path, np.zeros(shape, dtype)) if victim.endswith(".npy") else path.write_bytes(blob)
        with pytest.raises(DataError) as err:
            load("digits")
        assert str(built_digits) in str(err.value)
    finally:
        path.write_bytes(original)


@FUZZ
@given(blob=st.binary(max_size=400), cut=st.floats(0, 0.99))
def test_fuzzed_model_file(built_digits: Path, blob: bytes, cut: float) -> None:
    from hrm.evaluate.load import load_run
    from hrm.pipeline import studies
    from hrm.pipeline.config import load_params

    model_path = paths.model_file("demo", "digits-tiny", 0)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    torch.save({"state_dict": {"x": torch.zeros(3)}}, good)
    for content in (blob, good.getvalue()[: int(len(good.getvalue()) * cut)], good.getvalue()):
        model_path.write_bytes(content)
        with pytest.raises(DataError) as err:
            params = load_params()
            load_run(params, params.experiment("digits-tiny"), 0, studies.shape("digits"), torch.device("cpu"))
        assert str(model_path) in str(err.value)


@FUZZ
@given(value=JSONISH)
def test_fuzzed_metrics_json_in_report(built_digits: Path, value: Any) -> None:
    path = paths.metrics_file("demo", "digits-tiny", 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    tables = paths.table_files("demo")
    for t in tables:
        t.unlink(missing_ok=True)
    rc, err = _cli(["report", "demo"])
    assert rc == 2 and str(path) in err and "Traceback" not in err
    assert not any(t.exists() for t in tables)


@FUZZ
@given(text=st.text(max_size=200))
def test_fuzzed_training_trace_csv(built_digits: Path, text: str) -> None:
    from hrm.evaluate.figures import read_trace as _read_csv

    path = built_digits.parent / "steps.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        rows = _read_csv(path, {"step": int, "loss": float})
    except DataError as exc:
        assert str(path) in str(exc)
    else:
        assert rows and all(isinstance(r["loss"], float) for r in rows)


@FUZZ
@given(blob=st.binary(max_size=300))
def test_fuzzed_raw_mnist_through_the_cli(project: Path, blob: bytes) -> None:
    raw = paths.raw_dir("mnist")
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (raw / name).write_bytes(blob)
    rc, err = _cli(["build", "mnist"])
    assert rc == 2 and "data/raw/mnist/" in err and "Traceback" not in err
    assert not paths.built_dir("mnist").exists()
