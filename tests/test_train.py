"""Training on the digits: outputs, resume after a kill, and train/evaluate agreement."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from hrm.cli import main
from hrm.core import checkpoint, paths
from hrm.pipeline.config import load_params
from hrm.train import image as train


def _prepare() -> None:
    assert main(["download", "digits"]) == 0 and main(["build", "digits"]) == 0


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_train_writes_every_output_and_evaluate_agrees(project: Path) -> None:
    _prepare()
    assert main(["train", "digits-tiny", "--seed", "0"]) == 0
    g, n = "demo", "digits-tiny"
    metrics = json.loads(paths.metrics_file(g, n, 0).read_text())
    history = list(csv.DictReader(open(paths.history_file(g, n, 0))))
    steps = list(csv.DictReader(open(paths.steps_file(g, n, 0))))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert set(history[0]) >= {"train_loss", "train_acc", "test_acc", "lr", "seconds"}
    assert len(steps) == metrics["optimizer_steps"] == 2 * 6          # ceil(1438 / 256) = 6, last batch kept
    assert metrics["complete"] and metrics["test_acc"] == float(history[-1]["test_acc"])
    assert metrics["best_test_acc"] == max(float(r["test_acc"]) for r in history)
    assert metrics["gpu"]["device_name"] is None and metrics["gpu"]["energy_joules"] is None   # CPU run
    prov = metrics["provenance"]
    assert prov["command"] == "python -m hrm train digits-tiny --seed 0"
    assert set(prov) >= {"commit", "params_hash", "hardware", "date"}
    assert not paths.checkpoint_file(g, n, 0).exists()                 # finished runs leave no checkpoint

    assert main(["evaluate", "digits-tiny", "--seed", "0"]) == 0
    result = json.loads(paths.eval_file(g, n, 0).read_text())
    assert result["test_acc"] == pytest.approx(metrics["test_acc"])    # two code paths, one number
    matrix = result["confusion"]
    assert sum(map(sum, matrix)) == result["test_size"]
    correct = sum(matrix[i][i] for i in range(10))
    assert correct / result["test_size"] == pytest.approx(result["test_acc"])
    # The rows DVC's confusion template counts give back the same matrix.
    rows = list(csv.DictReader(open(paths.plot_data_file(g, n, 0, "test_predictions"))))
    names = result["label_names"]
    counted = [[0] * 10 for _ in range(10)]
    for r in rows:
        counted[names.index(r["actual"])][names.index(r["predicted"])] += 1
    assert len(rows) == result["test_size"] and counted == matrix
    for fig in paths.figure_files(g, n, 0).values():
        assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["report", "demo"]) == 0
    md, table = paths.table_files("demo")
    rows = list(csv.DictReader(open(table)))
    test_row = next(r for r in rows if r["metric"] == "test accuracy (%)")
    assert float(test_row["reproduced"]) == pytest.approx(100 * metrics["test_acc"], abs=0.01)
    assert test_row["paper"] == "" and test_row["status"] == "complete"
    assert "digits-tiny" in md.read_text()


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _prepare()
    params = load_params()
    train.train(params, "digits-tiny", 0)
    straight = _weights(paths.model_file("demo", "digits-tiny", 0))
    straight_hist = list(csv.DictReader(open(paths.history_file("demo", "digits-tiny", 0))))

    # Die during epoch 2, after epoch 1's checkpoint was written.
    real_save = checkpoint.save
    calls = []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        raise Killed

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        train.train(params, "digits-tiny", 0)
    assert paths.checkpoint_file("demo", "digits-tiny", 0).exists()
    monkeypatch.setattr(checkpoint, "save", real_save)
    train.train(params, "digits-tiny", 0)

    resumed = _weights(paths.model_file("demo", "digits-tiny", 0))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    metrics = json.loads(paths.metrics_file("demo", "digits-tiny", 0).read_text())
    assert metrics["resumed_from"] == [[1, 0]]
    hist = list(csv.DictReader(open(paths.history_file("demo", "digits-tiny", 0))))
    assert [r["test_acc"] for r in hist] == [r["test_acc"] for r in straight_hist]


def test_epoch_order_is_the_author_shuffle() -> None:
    import numpy as np

    idx = np.arange(100)
    np.random.default_rng(42 + 3).shuffle(idx)       # the author code's batch_iterator
    assert np.array_equal(train.epoch_order(100, 42, 3), idx)


def test_faithful_schedule_is_sized_in_batches_corrected_in_updates() -> None:
    from dataclasses import replace

    from conftest import REPO

    exp = load_params(REPO / "params.yaml").experiment("cifar10-hrm")
    faithful = train.make_schedule(exp, 391)
    corrected = train.make_schedule(replace(exp, mode="corrected"), 391)
    assert (faithful.total, faithful.warmup) == (391 * 25, 391)
    assert (corrected.total, corrected.warmup) == (391 * 25 * 2, 782)
    # Faithful: 2 updates per batch, so warmup ends half-way through epoch 1 and the LR reaches
    # the 6e-5 floor at update 9775 = batch 4888, i.e. during epoch 13 (REFERENCE I.5.1).
    assert faithful(391) == pytest.approx(3e-4) and faithful(9775) == pytest.approx(6e-5)
    assert 4888 // 391 + 1 == 13
    assert corrected(2 * 391 * 25) == pytest.approx(6e-5) and corrected(391) < 3e-4
    cnn = load_params(REPO / "params.yaml").experiment("cifar10-cnn")
    assert train.make_schedule(cnn, 391).total == train.make_schedule(replace(cnn, mode="corrected"), 391).total


@pytest.mark.parametrize("train_acc", ["pre_update", "post_update"])
def test_hrm_image_training_two_updates_per_batch(project: Path, train_acc: str) -> None:
    import yaml
    from conftest import write_params

    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["models"]["tiny-hrm"] = {**raw["models"]["hrm-digits"], "hidden": 16, "mlp_inner": 32, "heads": 2}
    raw["recipes"]["tiny"].update(epochs=1, train_acc=train_acc)
    raw["experiments"] = {"digits-hrm-tiny": {"group": "demo", "dataset": "digits", "model": "tiny-hrm",
                                              "recipe": "tiny", "seeds": [1], "mode": "faithful"}}
    write_params(project, raw)
    _prepare()
    assert main(["train", "digits-hrm-tiny", "--seed", "1"]) == 0
    metrics = json.loads(paths.metrics_file("demo", "digits-hrm-tiny", 1).read_text())
    assert metrics["optimizer_steps"] == 2 * 6 and metrics["mode"] == "faithful"
    assert 0.0 <= metrics["train_acc"] <= 1.0
    assert main(["evaluate", "digits-hrm-tiny", "--seed", "1"]) == 0
    result = json.loads(paths.eval_file("demo", "digits-hrm-tiny", 1).read_text())
    assert result["test_acc"] == pytest.approx(metrics["test_acc"])
