"""Shared fixtures: a throw-away project folder, tiny params, and the real MNIST files.

The MNIST folder comes from $HRM_TEST_MNIST (default ../shared/data/mnist). Where it is absent the
tests that need it skip with a reason; under CI (CI=true), where it must exist, they fail instead.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("HRM_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist"))
SHARED_DATA = Path(os.environ.get("HRM_TEST_DATA", REPO.parent / "shared" / "data"))

TINY_MODEL = {"kind": "cnn", "widths": [8, 16], "convs_per_stage": 1, "bn_momentum": 0.1, "bn_eps": 1e-5}
TINY_RECIPE = {"epochs": 2, "batch_size": 256, "eval_batch_size": 200, "lr": 3e-3, "weight_decay": 5e-4,
               "betas": [0.9, 0.999], "eps": 1e-8, "grad_clip": 1.0, "warmup_epochs": 1, "lr_floor": 0.2,
               "label_smoothing": 0.05, "train_acc": "pre_update"}


def real_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def tiny_params(**experiments: dict[str, Any]) -> dict[str, Any]:
    """The real params file with a tiny model and recipe added and only the given experiments."""
    raw = copy.deepcopy(real_params())
    raw["runtime"]["deterministic"] = True
    raw["runtime"]["num_threads"] = 1
    raw["models"]["tiny"] = dict(TINY_MODEL)
    raw["recipes"]["tiny"] = dict(TINY_RECIPE)
    raw["experiments"] = experiments or {
        "digits-tiny": {"group": "demo", "dataset": "digits", "model": "tiny", "recipe": "tiny", "seeds": [0],
                        "mode": "faithful"}}
    return raw


def write_params(folder: Path, raw: dict[str, Any]) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def workflow_project(root: Path, raw: dict[str, Any]) -> Path:
    """A scratch project for Snakemake: the workflow and profiles copied, the code linked (the rules'
    code dependencies), `raw` as its params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", root)
    for name in ("workflow", "profiles"):
        shutil.copytree(REPO / name, root / name)
    (root / "src").symlink_to(REPO / "src")
    write_params(root, raw)
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project root (cwd) whose src/ points at the real code and with tiny params."""
    (tmp_path / "src").symlink_to(REPO / "src")
    write_params(tmp_path, tiny_params())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HRM_DATA_DIR", raising=False)
    return tmp_path


@pytest.fixture
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: the MNIST copy must exist at {MNIST_DIR} (set HRM_TEST_MNIST)")
        pytest.skip(f"no MNIST copy at {MNIST_DIR} (set HRM_TEST_MNIST to run these tests)")
    return MNIST_DIR


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (ARC-AGI-1, ConceptARC, Maze-Hard); a failure in CI, a skip elsewhere."""
    if not (SHARED_DATA / "arc-agi-1" / "data" / "evaluation").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: the shared data must exist at {SHARED_DATA} (set HRM_TEST_DATA)")
        pytest.skip(f"no shared data at {SHARED_DATA} (set HRM_TEST_DATA to run these tests)")
    return SHARED_DATA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The whole-DAG run (the longest test, minutes) first: under `pytest -n 2` it then overlaps everything
    else instead of running alone at the end. (All slow tests first would run the multi-process ones side by
    side on two cores, which measured slower.)"""
    items.sort(key=lambda item: item.module.__name__ != "test_pipeline")
