"""The image test-set pass, shared by training (its per-epoch test score) and `hrm evaluate`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from hrm.data import build as built


class Normalizer:
    """uint8 images -> float, (x / pixel_max - mean) / std per channel, folded into one multiply-add."""

    def __init__(self, data: built.ImageData, device: torch.device) -> None:
        scale = 1.0 / (data.pixel_max * data.std.astype(np.float64))
        shift = -data.mean.astype(np.float64) / data.std.astype(np.float64)
        self.scale = torch.tensor(scale, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.shift = torch.tensor(shift, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.scale + self.shift


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, normalize: Normalizer, batch_size: int,
            autocast: Callable[[], AbstractContextManager] = nullcontext,
            on_batch: Callable[[], None] | None = None) -> torch.Tensor:
    """Class predictions for every row of `x`, in sequential batches, in eval mode (`on_batch` after each)."""
    was_training = model.training
    model.eval()
    preds = []
    with autocast():
        for i in range(0, len(x), batch_size):
            preds.append(model(normalize(x[i:i + batch_size])).argmax(-1))
            if on_batch is not None:
                on_batch()
    model.train(was_training)
    return torch.cat(preds)


# The analyses' view of a study's test set (hrm.analyze.load reads it through the study table's "pass").
load_data = built.load


def test_size(data: built.ImageData) -> int:
    return len(data.test_x)


def test_batches(data: built.ImageData, examples: int, batch: int, device: torch.device
                 ) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """The first `examples` test images, normalised: ((images,), labels) per batch."""
    normalize = Normalizer(data, device)
    for start in range(0, examples, batch):
        x = torch.from_numpy(np.array(data.test_x[start:start + batch])).to(device)
        y = torch.from_numpy(np.array(data.test_y[start:start + batch])).to(device)
        yield (normalize(x),), y


def initial_carry(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    return model.initial_carry(len(inputs[0]))


def puzzle_ids(data: built.ImageData) -> int:
    return 1                                     # images carry no puzzle identifiers
