"""The puzzle test-set pass, shared by training (its periodic test score) and `hrm evaluate`.

Every segment runs from the initial state (no halting, REFERENCE II.3); the predictions after
segment m are what the model gives with M_max = m, so one pass scores the inference-time scaling
curve. Exact accuracy (every supervised token right) and token accuracy; a caller that votes
(ARC) receives every batch's predictions through `each`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from hrm.core.losses import IGNORE_LABEL
from hrm.data.puzzles import stream
from hrm.data.puzzles.layout import PuzzleSplit


@torch.no_grad()
def predict_segments(model: torch.nn.Module, split: PuzzleSplit, idx: np.ndarray, puzzle_of: np.ndarray,
                     device: torch.device, autocast: AbstractContextManager, wanted: set[int],
                     pad_to: int | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """For each wanted segment count m: (m, argmax tokens, sigmoid(q_halt), labels) of examples `idx`.
    `pad_to`: run a short batch at this size (its last example repeated; rows are independent), so a
    compiled model sees one batch shape and the last batch costs no recompilation."""
    rows = len(idx)
    if pad_to is not None and rows < pad_to:
        idx = np.concatenate([idx, np.repeat(idx[-1:], pad_to - rows)])
    x, y, pid = stream.tensors(split, idx, puzzle_of, device)
    carry = model.initial_carry(*x.shape)
    for m in range(1, max(wanted) + 1):
        with autocast:
            out = model.segment(carry, x, pid)
        carry = out.carry
        if m in wanted:
            yield m, out.logits[:rows].argmax(-1), torch.sigmoid(out.q_halt[:rows].float()), y[:rows]


# Sees each scored batch: (segments, example indices, predicted tokens, confidences), on the device.
EachBatch = Callable[[int, np.ndarray, torch.Tensor, torch.Tensor], None]


def score_puzzles(model: torch.nn.Module, split: PuzzleSplit, batch: int, device: torch.device,
                  autocast: AbstractContextManager, segments: Iterable[int], each: EachBatch | None = None,
                  on_batch: Callable[[int], None] | None = None, pad: bool = False) -> dict[int, dict[str, float]]:
    """Exact and token accuracy of every test example after each segment count in `segments`
    (`on_batch` with the number of examples after each batch). `pad`: a compiled model's pass, whose
    short last batch runs at the full batch shape (no recompilation; wasted work for any other model)."""
    was_training = model.training
    model.eval()
    wanted = set(segments)
    puzzle_of = stream.example_puzzles(split)
    exact = dict.fromkeys(wanted, 0)
    tokens_right = dict.fromkeys(wanted, 0)
    tokens_total, n = 0, len(split.inputs)
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch))
        for m, pred, conf, y in predict_segments(model, split, idx, puzzle_of, device, autocast, wanted,
                                                 batch if pad else None):
            valid = y != IGNORE_LABEL
            right = (pred == y) & valid
            exact[m] += int((right.sum(-1) == valid.sum(-1)).sum())
            tokens_right[m] += int(right.sum())
            if m == max(wanted):
                tokens_total += int(valid.sum())
            if each is not None:
                each(m, idx, pred, conf)
        if on_batch is not None:
            on_batch(len(idx))
    model.train(was_training)
    return {m: {"exact_acc": exact[m] / n, "token_acc": tokens_right[m] / max(1, tokens_total)}
            for m in sorted(wanted)}


# The analyses' view of a study's test set (hrm.analyze.load reads it through the study table's "pass").
load_data = stream.load


def test_size(data: stream.PuzzleData) -> int:
    return len(data.test.inputs)


def test_batches(data: stream.PuzzleData, examples: int, batch: int, device: torch.device
                 ) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """The first `examples` test examples: ((tokens, puzzle ids), labels) per batch."""
    puzzle_of = stream.example_puzzles(data.test)
    for start in range(0, examples, batch):
        x, y, pid = stream.tensors(data.test, np.arange(start, min(examples, start + batch)), puzzle_of, device)
        yield (x, pid), y


def initial_carry(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    return model.initial_carry(*inputs[0].shape)


def puzzle_ids(data: stream.PuzzleData) -> int:
    return data.num_ids
