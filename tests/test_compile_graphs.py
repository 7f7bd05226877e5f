"""torch.compile of a training and its evaluation: no graph breaks, and a bounded set of graphs (one per
compiled module and grad mode and batch shape), so dynamo never hits its recompile limit and falls back
to eager on the GPU. Counted on the CPU with graph capture only (aot_eager: no C++ build)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import tiny_params, write_params
from test_puzzle_train import TINY_PUZZLE_MODEL, TINY_PUZZLE_RECIPE

from hrm import cli
from hrm.data.puzzles.sources import PUZZLES, Generated, PuzzleSet
from hrm.runtime import speed


@pytest.fixture
def compiled(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(speed, "BACKEND", "aot_eager")
    monkeypatch.setitem(PUZZLES, "sudoku-tiny", PuzzleSet("sudoku-tiny", "sudoku", Generated(40, 12, seed=3),
                                                          augmentations=0))
    raw = tiny_params(**{"sudoku-compiled": {"group": "demo", "dataset": "sudoku-tiny", "model": "tiny-puzzle",
                                             "recipe": "tiny", "seeds": [0]}})
    raw["runtime"] |= {"compile": True}
    raw["models"]["tiny-puzzle"] = TINY_PUZZLE_MODEL
    # 12 test puzzles in a batch of 16: the evaluation's short batch, padded to the training's shape.
    raw["recipes"]["tiny"] = {**TINY_PUZZLE_RECIPE, "epochs": 4, "eval_interval": 2, "batch_size": 16,
                              "eval_batch_size": 16}
    write_params(project, raw)
    assert cli.main(["download", "sudoku-tiny"]) == 0 and cli.main(["build", "sudoku-tiny"]) == 0
    return project


def test_training_and_evaluation_compile_without_breaks_or_recompiles(compiled: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    with caplog.at_level(logging.WARNING, logger="torch._dynamo"):
        assert cli.main(["train", "sudoku-compiled", "--seed", "0"]) == 0
        assert cli.main(["evaluate", "sudoku-compiled", "--seed", "0"]) == 0
    assert dict(counters["graph_break"]) == {}
    assert not [r for r in caplog.records if "recompile" in r.getMessage()]
    # The compiled stacks' graphs: no gradient (the early cycles, and evaluation), and with gradient for a
    # state that does or does not require it (the graded step's f_L and f_H inputs). No graph for a batch
    # shape (evaluation pads its short batch) nor for the initial carry's layout (it is contiguous).
    assert counters["stats"]["unique_graphs"] == 3
