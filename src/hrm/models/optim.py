"""Optimizers and the learning-rate schedule as a pure function of the step."""

from __future__ import annotations

import math

import torch


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


def adamw(params: list[torch.nn.Parameter], lr: float, betas: tuple[float, float], eps: float,
          weight_decay: float, impl: str = "foreach") -> torch.optim.AdamW:
    """AdamW with decay on ALL parameters (norm scales and BN included), as in the author code.
    `impl` (runtime.optimizer): foreach, fused or loop kernels, the same update."""
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                             foreach=impl == "foreach", fused=impl == "fused")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class AdamAtan2(torch.optim.Optimizer):
    """Adam-atan2 (REFERENCE II.3): scale-invariant Adam without epsilon.

    p <- p * (1 - lr * wd);  m, v as Adam;  p <- p - (lr / bc1) * atan2(m, sqrt(v) / sqrt(bc2)).
    Each step is a handful of foreach kernels over all parameters; `impl="loop"` runs the same
    arithmetic one tensor at a time (the reference); there is no fused kernel, so "fused" runs foreach.
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float, betas: tuple[float, float],
                 weight_decay: float, impl: str = "foreach") -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
        self.loop = impl == "loop"

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            b1, b2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            for p in params:
                if not self.state[p]:
                    self.state[p].update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            ms, vs = [s["m"] for s in states], [s["v"] for s in states]
            for s in states:
                s["step"] += 1
            t = states[0]["step"]
            if self.loop:
                for p, g, m, v in zip(params, grads, ms, vs):
                    p.mul_(1 - lr * wd)
                    m.lerp_(g, 1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.add_(torch.atan2(m, v.sqrt() / math.sqrt(1 - b2 ** t)), alpha=-lr / (1 - b1 ** t))
                continue
            torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(ms, grads, 1 - b1)                       # m = b1 m + (1 - b1) g
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)       # v = b2 v + (1 - b2) g^2
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, math.sqrt(1 - b2 ** t))
            updates = [torch.atan2(m, d) for m, d in zip(ms, denom)]
            torch._foreach_add_(params, updates, alpha=-lr / (1 - b1 ** t))


@torch.no_grad()
def sign_sgd_rows(table: torch.Tensor, ids: torch.Tensor, grad: torch.Tensor, lr: float, wd: float) -> None:
    """Puzzle-embedding update on the touched rows only: w <- w (1 - lr wd) - lr sign(sum of grads).

    Without `unique` (a host sync on CUDA, its size depends on the data): each batch row finds the
    first row with its id (a B x B comparison), the gradients are summed there, and every row writes
    its id's new value; rows sharing an id write the same value.
    """
    first = (ids[:, None] == ids[None, :]).int().argmax(dim=1)                      # (B,)
    summed = torch.zeros_like(grad).index_add_(0, first, grad)[first]
    table[ids] = table[ids] * (1 - lr * wd) - lr * torch.sign(summed).to(table.dtype)
