"""What every analysis starts from: an experiment's model (trained, or freshly initialised as
training initialises it) and its test inputs, for either study, on the runtime's device."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from hrm.core.gpu import resolve_device
from hrm.evaluate.load import load_run
from hrm.models.hrm import Carry
from hrm.pipeline import studies
from hrm.pipeline.config import Experiment, Params


@dataclass
class Subject:
    """A model with its test data; `batches` yields model-ready test batches and their labels, through the
    study's test-set pass (the study table's "pass" module)."""

    exp: Experiment
    model: torch.nn.Module
    data: Any                          # what the pass module's load_data gives
    device: torch.device
    amp: Any

    @property
    def sequences(self) -> bool:
        """Token sequences scored by exact match, halted by ACT (the puzzles), or one label per input."""
        return self.exp.study.sequences

    @property
    def tests(self) -> ModuleType:
        return importlib.import_module(self.exp.study.modules["pass"])

    def test_size(self) -> int:
        return self.tests.test_size(self.data)

    def batches(self, examples: int, batch: int) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
        """The first `examples` test examples: (model inputs, labels) per batch."""
        return self.tests.test_batches(self.data, examples, batch, self.device)

    def initial_carry(self, inputs: tuple[torch.Tensor, ...]) -> Carry:
        return self.tests.initial_carry(self.model, inputs)

    def segment(self, carry: Carry, inputs: tuple[torch.Tensor, ...]) -> Any:
        with self.amp:
            return self.model.segment(carry, *inputs)


def subject(params: Params, name: str, seed: int, trained: bool = True) -> Subject:
    exp = params.experiment(name)
    device = resolve_device(params.runtime.device)
    tests = importlib.import_module(exp.study.modules["pass"])
    data = tests.load_data(exp.dataset)
    run = load_run(params, exp, seed, studies.shape(exp.dataset, tests.puzzle_ids(data)), device, trained)
    run.model.eval()
    return Subject(exp, run.model, data, device, run.amp)
