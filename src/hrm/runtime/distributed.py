"""Data-parallel training: which rank this process is, and the few collectives both trainers use.

A run of W processes (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK) trains on the same global
batches as one process: rank r takes the rows `share(n)` of each batch of n, the loss is scaled by
1/n (the global batch) and the gradients are summed over the ranks, as in the HRM authors'
pretrain.py (a plain all-reduce after backward, no DDP wrapper: the models are stepped segment by
segment, not through forward()). Every rank holds identical weights, optimizer and RNG states, so
any rank could write the outputs; rank 0 alone does. NCCL on CUDA devices, gloo on the CPU.

With one process (`Ranks.single()`) every collective is the identity and no process group exists,
so a one-process run computes exactly what it did before data parallelism existed.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hrm.runtime.launch import launched

# A rank waits this long in a collective for the others (e.g. while rank 0 writes a checkpoint)
# before failing; a dead peer is noticed sooner, by the launcher.
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int

    @staticmethod
    def single() -> Ranks:
        return Ranks(0, 1, 0)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, metrics and outputs."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's rows of a global batch of n: contiguous, in rank order, sizes differing by at
        most one (numpy's array_split), so the ranks' rows concatenated are the global batch."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    # ---- collectives (identity with one process)
    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks, in place; returns `t`."""
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (all ranks stop at the same batch)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def all(self, flag: torch.Tensor) -> bool:
        """True on every rank if `flag` (a device bool scalar) is true on all of them."""
        if self.world == 1:
            return bool(flag)
        t = flag.float().reshape(1)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's `t` concatenated along dim 0 in rank order (bool travels as uint8: gloo has none)."""
        if self.world == 1:
            return t
        wire = t.to(torch.uint8) if t.dtype == torch.bool else t.contiguous()
        sizes = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([len(t)], device=t.device))
        parts = [wire.new_empty((int(s), *t.shape[1:])) for s in sizes]
        dist.all_gather(parts, wire)
        out = torch.cat(parts)
        return out.bool() if t.dtype == torch.bool else out

    def objects(self, obj: Any) -> list[Any]:
        """Every rank's picklable `obj`, in rank order (small things: GPU facts)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sum the gradients over the ranks: one flat buffer per dtype, one all-reduce each."""
        if self.world == 1:
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for p in params:
            if p.grad is not None:
                by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            torch._foreach_copy_(grads, [v.view_as(g) for v, g in zip(flat.split([g.numel() for g in grads]), grads)])


def _device() -> torch.device:
    """The device a collective's scratch tensor lives on: NCCL needs CUDA, gloo takes the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def group(use_cuda: bool) -> Iterator[Ranks]:
    """The process group of a launched run (NCCL with CUDA, else gloo), torn down at the end; a
    single-process `Ranks` without one when this process was not launched by torchrun."""
    if not launched() or int(os.environ["WORLD_SIZE"]) == 1:
        yield Ranks.single()
        return
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if use_cuda:
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    try:
        yield ranks
    finally:
        dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """All-reduce that gradients flow through: each rank's input feeds every rank's output, so the
    gradient of an input is the sum of the output gradients over the ranks."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncedBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm whose training statistics span the global batch (every rank's rows), as one process
    computes them; the same parameters and running statistics as nn.BatchNorm2d. torch's
    SyncBatchNorm needs a GPU; this one runs on gloo too. Two passes (mean, then the centred
    squares) keep the variance as accurate as the single-process kernel's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        xf = x.float()                          # statistics in fp32 whatever the autocast dtype
        count = xf.new_tensor([x.numel() / x.shape[1]])
        total = all_reduce(torch.cat([xf.sum((0, 2, 3)), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = xf - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum((0, 2, 3))) / n
        with torch.no_grad():                  # running statistics: PyTorch's convention, unbiased variance
            assert self.running_mean is not None and self.running_var is not None
            self.running_mean.lerp_(mean.detach(), self.momentum or 0.0)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum or 0.0)
            if self.num_batches_tracked is not None:
                self.num_batches_tracked += 1
        scale = (self.weight * torch.rsqrt(var + self.eps))[None, :, None, None]
        return (centred * scale + self.bias[None, :, None, None]).to(x.dtype)


def sync_batchnorm(model: torch.nn.Module, ranks: Ranks) -> None:
    """With several ranks, every nn.BatchNorm2d of `model` becomes a SyncedBatchNorm2d (same state)."""
    if ranks.world == 1:
        return
    for module in model.modules():
        if type(module) is torch.nn.BatchNorm2d:
            module.__class__ = SyncedBatchNorm2d
