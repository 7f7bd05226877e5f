"""The demo's reasoning half learns: its Sudoku HRM, as configured in params.yaml, beats its untrained
self after a tiny budget; its data sets hold what the demo table says (unseen test puzzles)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import real_params, tiny_params, write_params

from hrm import cli
from hrm.core import checkpoint, paths
from hrm.data.puzzles import stream
from hrm.data.puzzles.sources import PUZZLES
from hrm.evaluate.puzzle_pass import score_puzzles
from hrm.models.registry import build_model
from hrm.pipeline import studies
from hrm.pipeline.config import load_params

BUDGET = 100          # optimizer steps: about 30 s on one CPU thread


@pytest.fixture
def demo_sudoku(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo's Sudoku experiment unchanged but for fewer puzzles and a budget of BUDGET updates."""
    spec = PUZZLES["sudoku-demo"]
    monkeypatch.setitem(PUZZLES, "sudoku-demo", dataclasses.replace(
        spec, source=dataclasses.replace(spec.source, train=300, test=64)))
    real = real_params()
    exp = real["experiments"]["sudoku-demo-hrm"]
    exp.pop("stands_for", None)                # its target is not in this trimmed params file
    raw = tiny_params(**{"sudoku-demo-hrm": exp})
    raw["recipes"][exp["recipe"]]["max_steps"] = BUDGET
    write_params(project, raw)
    assert cli.main(["download", "sudoku-demo"]) == 0 and cli.main(["build", "sudoku-demo"]) == 0
    return project


def _scores(model: torch.nn.Module, data: stream.PuzzleData, m_max: int) -> dict[str, float]:
    return score_puzzles(model, data.test, 64, torch.device("cpu"), torch.autocast("cpu", enabled=False),
                         (m_max,))[m_max]


def test_demo_sudoku_hrm_improves_over_its_untrained_self(demo_sudoku: Path) -> None:
    exp = load_params().experiment("sudoku-demo-hrm")
    data = stream.load("sudoku-demo")
    untrained = build_model(exp.model, studies.shape(exp.dataset, data.num_ids))
    untrained.init_weights(torch.Generator().manual_seed(0))         # what training starts from (seed 0)
    before = _scores(untrained, data, exp.model.halt_max_steps)

    assert cli.main(["train", "sudoku-demo-hrm", "--seed", "0"]) == 0
    trained = checkpoint.load_model_file(paths.model_file("demo", "sudoku-demo-hrm", 0),
                                         build_model(exp.model, studies.shape(exp.dataset, data.num_ids)), "train")
    after = _scores(trained, data, exp.model.halt_max_steps)
    # Token accuracy counts the given cells too; an untrained model does not even copy them.
    assert after["token_acc"] > before["token_acc"] + 0.2, (before, after)
    assert after["exact_acc"] >= before["exact_acc"]


def test_demo_sudoku_test_puzzles_are_unseen_in_training(demo_sudoku: Path) -> None:
    data = stream.load("sudoku-demo")
    train = {row.tobytes() for row in np.asarray(data.train.inputs)}
    test = np.asarray(data.test.inputs)
    assert len(test) == 64 and data.train.meta.seq_len == 16 and data.train.meta.vocab_size == 6
    assert not any(row.tobytes() in train for row in test)
