"""What every analysis starts from: an experiment's model (trained, or freshly initialised as
training initialises it) and its test inputs, for either study, on the runtime's device."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hrm.core.gpu import resolve_device
from hrm.evaluate.load import load_run
from hrm.models.hrm import Carry
from hrm.pipeline import studies
from hrm.pipeline.config import Experiment, Params


@dataclass
class Subject:
    """A model with its test data; `batches` yields model-ready test batches and their labels."""

    exp: Experiment
    model: torch.nn.Module
    data: Any                          # hrm.data.build.ImageData or hrm.data.puzzles.stream.PuzzleData
    device: torch.device
    amp: Any

    @property
    def puzzle(self) -> bool:
        return self.exp.study.name == "puzzle"

    def test_size(self) -> int:
        return len(self.data.test.inputs) if self.puzzle else len(self.data.test_x)

    def batches(self, examples: int, batch: int) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
        """The first `examples` test examples: (model inputs, labels) per batch."""
        if self.puzzle:
            from hrm.data.puzzles import stream

            puzzle_of = stream.example_puzzles(self.data.test)
            for start in range(0, examples, batch):
                x, y, pid = stream.tensors(self.data.test, np.arange(start, min(examples, start + batch)),
                                           puzzle_of, self.device)
                yield (x, pid), y
        else:
            from hrm.evaluate.image_pass import Normalizer

            normalize = Normalizer(self.data, self.device)
            for start in range(0, examples, batch):
                x = torch.from_numpy(np.array(self.data.test_x[start:start + batch])).to(self.device)
                y = torch.from_numpy(np.array(self.data.test_y[start:start + batch])).to(self.device)
                yield (normalize(x),), y

    def initial_carry(self, inputs: tuple[torch.Tensor, ...]) -> Carry:
        x = inputs[0]
        return self.model.initial_carry(*x.shape) if self.puzzle else self.model.initial_carry(len(x))

    def segment(self, carry: Carry, inputs: tuple[torch.Tensor, ...]) -> Any:
        with self.amp:
            return self.model.segment(carry, *inputs)


def subject(params: Params, name: str, seed: int, trained: bool = True) -> Subject:
    exp = params.experiment(name)
    device = resolve_device(params.runtime.device)
    if exp.study.name == "puzzle":
        from hrm.data.puzzles import stream

        data = stream.load(exp.dataset)
        shape = studies.shape(exp.dataset, data.num_ids)
    else:
        from hrm.data import build as built

        data = built.load(exp.dataset)
        shape = studies.shape(exp.dataset)
    run = load_run(params, exp, seed, shape, device, trained)
    run.model.eval()
    return Subject(exp, run.model, data, device, run.amp)
