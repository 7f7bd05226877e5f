"""Weight initialisation matching JAX/Flax conventions, drawn from an explicit generator."""

from __future__ import annotations

import math

import torch

# Standard deviation of a unit normal truncated to [-2, 2]; JAX divides by it so that the
# truncated sample has exactly the target standard deviation.
TRUNCATED_STD = 0.87962566103423978


@torch.no_grad()
def trunc_normal_(w: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Truncated normal (cut at +-2 underlying sd) whose sample std equals `std` (the JAX convention)."""
    s = std / TRUNCATED_STD
    return torch.nn.init.trunc_normal_(w, mean=0.0, std=s, a=-2 * s, b=2 * s, generator=generator)


def fan_in(w: torch.Tensor) -> int:
    # (out, in, *kernel) for both nn.Linear and nn.Conv2d weights.
    return w.shape[1] * math.prod(w.shape[2:])


def lecun_normal_(w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flax's default kernel init: variance 1/fan_in, truncated normal."""
    return trunc_normal_(w, 1.0 / math.sqrt(fan_in(w)), generator)
