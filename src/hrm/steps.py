"""What one batch does: the LR schedule, the optimizer update, and a step function per model kind.

Image CNN: one forward, one update. Image HRM (REFERENCE I.3): deep supervision, an update after
each segment, with the author code's quirks available in faithful mode (REFERENCE I.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hrm.config import Experiment, Recipe
from hrm.gpu import autocast
from hrm.optim import lr_at, set_lr


@dataclass(frozen=True)
class Schedule:
    """Learning rate as a function of the optimizer step (REFERENCE I.3: sized in steps)."""

    recipe: Recipe
    total: int
    warmup: int

    def __call__(self, step: int) -> float:
        r = self.recipe
        return lr_at(step, peak=r.lr, total=self.total, warmup=self.warmup, floor=r.lr_floor)


@dataclass
class StepContext:
    """What a batch step needs besides the batch: the recipe, the LR per update, precision."""

    recipe: Recipe
    schedule: Schedule
    updates: int                      # optimizer updates taken so far
    device: torch.device
    precision: str
    post_update_acc: bool             # faithful HRM-CIFAR quirk: accuracy of a re-run after the updates

    def update(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Backward, global-norm clip, then one optimizer step at lr_at(updates)."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.recipe.grad_clip)
        set_lr(optimizer, self.schedule(self.updates))
        optimizer.step()
        self.updates += 1

    def autocast(self) -> torch.autocast:
        return autocast(self.device, self.precision)


# One batch: returns (mean loss, number of correct predictions) as device tensors.
BatchStep = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.optim.Optimizer, StepContext],
                     tuple[torch.Tensor, torch.Tensor]]


def classifier_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                    ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain supervised step; accuracy is train-mode, measured before the update (author's CNN)."""
    with ctx.autocast():
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=ctx.recipe.label_smoothing)
    ctx.update(model, optimizer, loss)
    return loss.detach(), (logits.detach().argmax(-1) == y).sum()


def hrm_image_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                   ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep supervision (REFERENCE I.3): M segments from the initial state, one update after EACH."""
    carry = model.initial_carry(len(x))
    losses, hits = [], []
    for _ in range(model.c.train_segments):
        with ctx.autocast():
            out = model.segment(carry, x)
        loss = F.cross_entropy(out.logits.float(), y, label_smoothing=ctx.recipe.label_smoothing)
        ctx.update(model, optimizer, loss)
        carry = out.carry.detach()          # no gradient crosses a segment boundary
        losses.append(loss.detach())
        hits.append((out.logits.detach().argmax(-1) == y).sum())
    if ctx.post_update_acc:
        with torch.no_grad(), ctx.autocast():
            return torch.stack(losses).mean(), (model(x).argmax(-1) == y).sum()
    return torch.stack(losses).mean(), torch.stack(hits).float().mean()


BATCH_STEPS: dict[str, BatchStep] = {"cnn": classifier_step, "hrm-image": hrm_image_step}


def make_schedule(exp: Experiment, steps_per_epoch: int) -> Schedule:
    """Sized in batches in faithful mode even when a batch takes several updates (REFERENCE I.5.1)."""
    per_batch = 1 if exp.mode == "faithful" else getattr(exp.model, "train_segments", 1)
    total = steps_per_epoch * exp.recipe.epochs * per_batch
    return Schedule(exp.recipe, total, round(exp.recipe.warmup_epochs * steps_per_epoch * per_batch))


def compile_model(model: torch.nn.Module) -> None:
    """Compile the transformer stacks (the HRM's hot loop) or, for other models, the whole forward."""
    from hrm.models.layers import Stack

    stacks = [m for m in model.modules() if isinstance(m, Stack)]
    for m in stacks or [model]:
        m.compile()
