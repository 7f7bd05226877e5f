"""`hrm train` for the image study (REFERENCE I.2-I.5): CNN and image HRM, one epoch loop.

The whole data set sits on the device as uint8 and is normalised per batch; the only host->device
copy per epoch is the shuffled index order (numpy PCG64 seeded with seed + epoch, as the author
code). The test set is evaluated after every epoch, where a checkpoint is written (and mid-epoch
on SIGTERM/SIGINT). What one batch does: `classifier_step` (CNN) or `hrm_image_step` (deep
supervision, an update after each segment), with the author code's quirks in faithful mode (I.5).
Lock, signals, OOM, checkpoint and output files: `hrm.train.run`. With several processes each rank
takes its rows of every batch (hrm.runtime.distributed), BatchNorm statistics span the global batch, and
the gradients are summed over the ranks before the clip.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hrm.core.checkpoint import RunState
from hrm.core.errors import NumericalError
from hrm.core.gpu import synchronize, to_device
from hrm.core.progress import Progress
from hrm.data import build as built
from hrm.evaluate.image_pass import Normalizer, predict
from hrm.models.optim import adamw, lr_at, set_lr
from hrm.models.registry import MODELS, build_model, count_params
from hrm.pipeline import studies
from hrm.pipeline.config import Experiment, ImageRecipe, Params
from hrm.runtime.distributed import Ranks, sync_batchnorm
from hrm.runtime.speed import apply_precision, compile_model, mark_step
from hrm.train.run import Run

log = logging.getLogger("hrm")


@dataclass(frozen=True)
class Schedule:
    """Learning rate as a function of the optimizer step (REFERENCE I.3: sized in steps)."""

    recipe: ImageRecipe
    total: int
    warmup: int

    def __call__(self, step: int) -> float:
        r = self.recipe
        return lr_at(step, peak=r.lr, total=self.total, warmup=self.warmup, floor=r.lr_floor)


@dataclass
class StepContext:
    """What a batch step needs besides the batch: the recipe, the LR per update, precision."""

    recipe: ImageRecipe
    schedule: Schedule
    state: RunState                   # its `step` is the one update counter
    amp: torch.autocast               # the run's autocast (hrm.runtime.speed.apply_precision)
    post_update_acc: bool             # faithful HRM-CIFAR quirk: accuracy of a re-run after the updates
    ranks: Ranks = field(default_factory=Ranks.single)
    share: float = 1.0                # this rank's fraction of the current global batch

    def update(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Backward, global-norm clip, then one optimizer step at lr_at(updates). With several ranks the
        local mean is weighted by the rank's share and the gradients summed: the global batch's mean."""
        optimizer.zero_grad(set_to_none=True)
        if self.ranks.world == 1:
            loss.backward()
        else:
            (loss * self.share).backward()
            self.ranks.grads(model.parameters())
        if self.recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.recipe.grad_clip)
        set_lr(optimizer, self.schedule(self.state.step))
        optimizer.step()
        self.state.step += 1

    def autocast(self) -> torch.autocast:
        return self.amp


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
    """Deep supervision (REFERENCE I.3): M segments from the initial state, one update after EACH.
    Without it (`deep_supervision: false`) the first M - 1 segments run without gradient and only the
    last one is supervised: the same computation, one loss and one update."""
    carry = model.initial_carry(len(x))
    if not model.c.deep_supervision:
        with torch.no_grad(), ctx.autocast():
            for _ in range(model.c.train_segments - 1):
                carry = model.segment(carry, x).carry
    losses, hits = [], []
    for _ in range(model.c.train_segments if model.c.deep_supervision else 1):
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


# A model whose states carry across segments (its registry row's two_states) takes the deep-supervision step.
BATCH_STEPS: dict[bool, BatchStep] = {False: classifier_step, True: hrm_image_step}


def make_schedule(exp: Experiment, steps_per_epoch: int) -> Schedule:
    """Sized in batches in faithful mode even when a batch takes several updates (REFERENCE I.5.1)."""
    supervised = getattr(exp.model, "deep_supervision", False)
    per_batch = 1 if exp.mode == "faithful" or not supervised else exp.model.train_segments
    total = steps_per_epoch * exp.recipe.epochs * per_batch
    return Schedule(exp.recipe, total, round(exp.recipe.warmup_epochs * steps_per_epoch * per_batch))


def crop_flip(x: torch.Tensor, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Random crop of uint8 images (B, C, H, W) after zero padding by H // 8 on each side, then (with
    `flip`) a horizontal flip with p = 0.5 (REFERENCE I.7; torchvision's RandomCrop(padding=4) +
    RandomHorizontalFlip on CIFAR). Draws come from `generator` on the CPU; the gather runs on the device."""
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    # One small copy per batch, pinned and asynchronous (no host sync on a GPU).
    draws = torch.stack([torch.randint(0, 2 * pad + 1, (b,), generator=generator) for _ in range(2)]
                        + [((torch.rand(b, generator=generator) < 0.5) & flip).long()])
    dy, dx, flips = to_device(draws, x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)                             # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flips.bool()[:, None], cols.flip(-1), cols)                    # (B, W)
    padded = F.pad(x, (pad, pad, pad, pad))
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The author code's shuffle: numpy default_rng(seed + epoch) permutation, epochs counted from 1."""
    return np.random.default_rng(seed + epoch).permutation(n)


class ImageRun(Run):
    """One image run: model, optimizer and data on the device, and the epoch loop."""

    load_data = staticmethod(built.load)
    synthetic_data = staticmethod(built.synthetic)      # random data of the set's shape (hrm bench)

    def __init__(self, params: Params, exp: Experiment, seed: int, data: built.ImageData,
                 ranks: Ranks | None = None) -> None:
        super().__init__(params, exp, seed, ranks)
        assert isinstance(exp.recipe, ImageRecipe)
        self.recipe: ImageRecipe = exp.recipe
        arrays = (data.train_x, data.train_y, data.test_x, data.test_y)
        self.x_train, self.y_train, self.x_test, self.y_test = (torch.from_numpy(np.array(a)).to(self.device)
                                                                for a in arrays)
        self.normalize = Normalizer(data, self.device)
        self.shape = studies.shape(exp.dataset)
        self.model = build_model(exp.model, self.shape)
        self.model.init_weights(torch.Generator().manual_seed(seed))
        sync_batchnorm(self.model, self.ranks)
        self.model.to(self.device)
        self.amp = apply_precision(self.model, self.device, self.runtime.precision)
        r = self.recipe
        self.optimizer = adamw(list(self.model.parameters()), r.lr, r.betas, r.eps, r.weight_decay,
                               self.runtime.optimizer)
        self.steps_per_epoch = math.ceil(len(self.x_train) / self.recipe.batch_size)
        self.step_fn = BATCH_STEPS[MODELS[exp.model.kind].two_states]
        compile_model(self.model, self.runtime, self.device)
        # A NaN check is a host sync: every batch on the CPU (free), every log interval on a GPU.
        self.check_every = 1 if self.device.type == "cpu" else self.runtime.log_every_steps

    def setup(self) -> None:
        self.ctx = StepContext(self.recipe, make_schedule(self.exp, self.steps_per_epoch), self.state, self.amp,
                               post_update_acc=self.exp.mode == "faithful"
                               and self.recipe.train_acc == "post_update", ranks=self.ranks)

    def loop(self) -> None:
        for epoch in range(self.state.epoch + 1, self.recipe.epochs + 1):
            losses, correct, train_s = self.train_epoch(epoch)
            self.end_epoch(epoch, losses, correct, train_s)

    def train_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """All batches of one epoch (from the saved offset when resuming inside it)."""
        s, bs, n_batches = self.state, self.recipe.batch_size, self.steps_per_epoch
        start = s.offset // bs
        self.model.train()
        order = self.epoch_order(epoch)
        losses = torch.zeros(n_batches, device=self.device)
        if start:
            losses[:start] = torch.tensor(s.step_losses[-start:], device=self.device)
        correct = torch.tensor(s.since_eval.get("correct", 0.0), device=self.device)
        synchronize(self.device)
        t0, checked = time.perf_counter() - s.since_eval.get("seconds", 0.0), start
        with Progress(n_batches, f"{self.exp.name} s{self.seed} epoch {epoch}/{self.recipe.epochs}",
                      "batches") as bar:
            bar.skip(start)
            for i in range(start, n_batches):
                loss, hits = self.train_batch(order[i * bs:(i + 1) * bs])
                losses[i], correct = loss, correct + hits
                due = (i + 1) % self.check_every == 0 or i + 1 == n_batches
                if due or self.stop.received:
                    self.check_finite(losses, checked, i + 1, epoch)
                    checked = i + 1
                every = self.runtime.log_every_steps
                bar.advance(1, f"loss {loss.item():.4f}" if (i + 1) % every == 0 else "")
                if self.should_stop(due) and i + 1 < n_batches:
                    synchronize(self.device)
                    s.step_losses += losses[start:i + 1].cpu().tolist()
                    s.offset = (i + 1) * bs
                    s.since_eval = {"correct": correct.item(), "seconds": time.perf_counter() - t0}
                    self.save()
                    raise self.stopped(f"at epoch {epoch}, batch {i + 1}/{n_batches}")
        synchronize(self.device)
        self.state.step_losses += losses[start:].cpu().tolist()
        return losses, correct, time.perf_counter() - t0

    def batches(self, epoch: int = 1) -> Iterator[torch.Tensor]:
        """Endless training batches (example indices) in the loop's own order, from `epoch` on."""
        bs = self.recipe.batch_size
        while True:
            order = self.epoch_order(epoch)
            for i in range(self.steps_per_epoch):
                yield order[i * bs:(i + 1) * bs]
            epoch += 1

    def learning_rates(self, step: int) -> dict[str, float]:
        """The rate(s) the optimizer takes at update `step` (counted from 0)."""
        return {"lr": self.ctx.schedule(step)}

    def plan(self) -> dict[str, int]:
        """The run's length as the loop and the schedule size it."""
        sched = self.ctx.schedule
        return {"epochs": self.recipe.epochs, "batches_per_epoch": self.steps_per_epoch,
                "schedule_steps": sched.total, "warmup_steps": sched.warmup}

    def probe_test(self, n: int) -> dict[str, torch.Tensor]:
        """The training loop's test pass on the first `n` test images, and their logits."""
        x = self.x_test[:n]
        pred = predict(self.model, x, self.normalize, self.recipe.eval_batch_size, self.ctx.autocast)
        with torch.no_grad():
            self.model.eval()
            logits = self.model(self.normalize(x))
            self.model.train()
        return {"predictions": pred, "logits": logits}

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The epoch's shuffled example order, on the device; batch i is order[i * batch : (i + 1) * batch]."""
        return torch.from_numpy(epoch_order(len(self.x_train), self.seed, epoch)).to(self.device)

    def train_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch (the rows `idx` of the training set): (mean loss, correct predictions) over the
        global batch, on the device. This rank trains on its share of the rows."""
        mark_step(self.runtime, self.device)
        x = self.x_train[idx]
        if self.recipe.augment != "none":
            # Seeded by (run seed, update counter): the same draws when a killed run resumes; drawn for
            # the global batch, so every rank's rows are augmented as one process would.
            x = crop_flip(x, torch.Generator().manual_seed(self.seed * 1_000_003 + self.state.step),
                          flip=self.recipe.augment == "crop-flip")
        rows = self.ranks.share(len(idx))                  # all of them with one process
        self.ctx.share = (rows.stop - rows.start) / len(idx)
        loss, hits = self.step_fn(self.model, self.normalize(x[rows]), self.y_train[idx[rows]], self.optimizer,
                                  self.ctx)
        if self.ranks.world == 1:
            return loss, hits
        total = self.ranks.sum(torch.stack([loss.double() * self.ctx.share, hits.double()]))
        return total[0].float(), total[1]

    def check_finite(self, losses: torch.Tensor, lo: int, hi: int, epoch: int) -> None:
        """Stop on the first NaN/Inf loss in losses[lo:hi], before anything is checkpointed."""
        bad = (~torch.isfinite(losses[lo:hi])).nonzero()
        if len(bad):
            b = lo + int(bad[0])
            raise NumericalError(
                f"{self.label}: non-finite loss at epoch {epoch} batch {b + 1} (optimizer update <= "
                f"{self.state.step}): cross_entropy={losses[b].item()}; stopped without saving; the last good "
                f"checkpoint (after epoch {self.state.epoch}, example {self.state.offset}) is kept at {self.ckpt}")

    def end_epoch(self, epoch: int, losses: torch.Tensor, correct: torch.Tensor, train_s: float) -> None:
        """Test pass, history row, checkpoint; then stop if a signal arrived during the epoch."""
        s = self.state
        t1 = time.perf_counter()
        pred = predict(self.model, self.x_test, self.normalize, self.recipe.eval_batch_size, self.ctx.autocast)
        test_acc = (pred == self.y_test).float().mean().item()
        eval_s = time.perf_counter() - t1
        s.history.append({"epoch": epoch, "step": s.step, "train_loss": float(np.mean(losses.cpu().tolist())),
                          "train_acc": correct.item() / len(self.x_train), "test_acc": test_acc,
                          "lr": self.ctx.schedule(s.step - 1), "seconds": round(train_s, 3),
                          "eval_seconds": round(eval_s, 3)})
        s.epoch, s.offset, s.since_eval = epoch, 0, {}
        row = s.history[-1]
        log.info("%s epoch %d/%d: train loss %.4f acc %.4f | test acc %.4f | %.1fs", self.label, epoch,
                 self.recipe.epochs, row["train_loss"], row["train_acc"], test_acc, train_s)
        self.save()
        if self.should_stop(True) and epoch < self.recipe.epochs:
            raise self.stopped(f"after epoch {epoch}")

    def metrics(self, best: dict[str, Any]) -> dict[str, Any]:
        history = self.state.history
        return {"params": count_params(self.exp.model, self.shape), "epochs": self.state.epoch,
                "epochs_planned": self.recipe.epochs, "complete": self.state.epoch == self.recipe.epochs,
                "best_epoch": best["epoch"], "seconds_per_epoch": [r["seconds"] for r in history],
                "mean_seconds_per_epoch": round(float(np.mean([r["seconds"] for r in history])), 3),
                "eval_seconds_per_epoch": round(float(np.mean([r["eval_seconds"] for r in history])), 3)}


RUN = ImageRun                 # the fingerprint probe builds runs through it
train = RUN.train
