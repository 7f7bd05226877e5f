"""Exponential moving average of the weights (TRM, REFERENCE V.2; the authors' models/ema.py).

The average starts as a copy of the initial parameters and after every optimizer step becomes
rate * average + (1 - rate) * weights. Only parameters are averaged: the puzzle-embedding table
is a buffer, so it is excluded as in the authors' code and evaluation uses its current rows.
Evaluation and model.pt use the average (`applied`); a checkpoint saves it beside the weights so
a killed run resumes with the same average.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """The average of `model`'s trainable parameters. The parameter tensors are held from the start:
    training, loading and compiling change them in place, so no per-step lookup is needed."""

    def __init__(self, model: nn.Module, rate: float) -> None:
        self.rate = rate
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p.detach() for _, p in named]        # views of the live weights
        self.shadow = [p.clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """shadow <- rate * shadow + (1 - rate) * weights, one multi-tensor kernel."""
        torch._foreach_lerp_(self.shadow, self.params, 1.0 - self.rate)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model inside the block, its own weights restored after."""
        saved = [p.clone() for p in self.params]
        torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            torch._foreach_copy_(self.params, saved)

    def state(self) -> dict[str, torch.Tensor]:
        return {f"ema/{n}": s.cpu() for n, s in zip(self.names, self.shadow)}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if f"ema/{n}" not in state]
        if missing:
            raise ValueError(f"checkpoint has no moving average for {', '.join(missing[:3])}")
        for s, n in zip(self.shadow, self.names):
            s.copy_(state[f"ema/{n}"])
