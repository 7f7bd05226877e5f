"""Optimizers and the learning-rate schedule as a pure function of the step."""

from __future__ import annotations

import math

import torch

from hrm.config import Recipe


def lr_at(step: int, *, peak: float, total: int, warmup: int, floor: float) -> float:
    """optax.warmup_cosine_decay_schedule(0, peak, warmup, total, floor * peak) at 0-based `step`.

    With warmup 0 and floor 0 this is optax.cosine_decay_schedule(peak, total) (the MNIST recipe).
    """
    if step < warmup:
        return peak * step / warmup
    end = floor * peak
    span = max(total - warmup, 1)
    progress = min(step - warmup, span) / span
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw(params: list[torch.nn.Parameter], recipe: Recipe) -> torch.optim.AdamW:
    """AdamW with decay on ALL parameters (norm scales and BN included), as in the author code."""
    return torch.optim.AdamW(params, lr=recipe.lr, betas=recipe.betas, eps=recipe.eps,
                             weight_decay=recipe.weight_decay, foreach=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
