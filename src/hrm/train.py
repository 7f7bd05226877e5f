"""`hrm train EXPERIMENT --seed S`: the image-classification training loop (REFERENCE I.2-I.5).

The whole data set sits on the device as uint8 and is normalised per batch; the only host->device
copy per epoch is the shuffled index order (numpy PCG64 seeded with seed + epoch, as the author
code). The test set is evaluated after every epoch; a checkpoint is written at every epoch end.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hrm import checkpoint, paths, provenance
from hrm.atomic import atomic_path, write_json, write_text
from hrm.config import Experiment, Params, Recipe, Runtime
from hrm.errors import HrmError, NumericalError, Stopped
from hrm.data import build as built
from hrm.data.sources import DATASETS
from hrm.evaluate import Normalizer, predict
from hrm.gpu import GpuMonitor, autocast, resolve_device, synchronize
from hrm.guard import RunLock, StopSignals
from hrm.models.registry import build_model, count_params
from hrm.optim import adamw, lr_at, set_lr
from hrm.progress import Progress

log = logging.getLogger("hrm")


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


def configure_torch(runtime: Runtime) -> None:
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    if runtime.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The author code's shuffle: numpy default_rng(seed + epoch) permutation, epochs counted from 1."""
    return np.random.default_rng(seed + epoch).permutation(n)


def _csv(rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _place(data: built.ImageData, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The whole data set on the device, uint8 images (normalised per batch)."""
    arrays = (data.train_x, data.train_y, data.test_x, data.test_y)
    return tuple(torch.from_numpy(np.array(a)).to(device) for a in arrays)


def train(params: Params, name: str, seed: int) -> Path:
    """Train one run; refuses (exit 2) if another process holds its run folder."""
    exp: Experiment = params.experiment(name)
    data = built.load(exp.dataset)                    # validates the data before anything is written
    with RunLock(paths.run_dir(exp.group, name, seed)):
        try:
            return _train(params, exp, seed, data)
        except torch.cuda.OutOfMemoryError:
            r = exp.recipe
            raise HrmError(f"{name} seed {seed}: CUDA out of memory with batch size {r.batch_size} "
                           f"(eval {r.eval_batch_size}); lower recipes.{exp.recipe_name}.batch_size "
                           f"(or .eval_batch_size) in {params.path}, or set runtime.precision: bf16; "
                           f"no outputs were written, earlier checkpoints are kept") from None


def _nonfinite(losses: torch.Tensor, lo: int, hi: int) -> int | None:
    """Index of the first NaN/Inf loss in losses[lo:hi], or None (one host sync)."""
    bad = (~torch.isfinite(losses[lo:hi])).nonzero()
    return lo + int(bad[0]) if len(bad) else None


def _train(params: Params, exp: Experiment, seed: int, data: built.ImageData) -> Path:
    name, recipe, runtime, spec = exp.name, exp.recipe, params.runtime, DATASETS[exp.dataset]
    device = resolve_device(runtime.device)
    configure_torch(runtime)
    x_train, y_train, x_test, y_test = _place(data, device)
    normalize = Normalizer(data, device)

    model = build_model(exp.model, spec)
    model.init_weights(torch.Generator().manual_seed(seed))
    model.to(device)
    optimizer = adamw(list(model.parameters()), recipe)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    schedule = make_schedule(exp, steps_per_epoch)
    step_fn = BATCH_STEPS[exp.model.kind]
    if runtime.compile and device.type == "cuda":
        compile_model(model)
    # A NaN check is a host sync: every batch on the CPU (free), every log interval on a GPU.
    check_every = 1 if device.type == "cpu" else runtime.log_every_steps

    ckpt = paths.checkpoint_file(exp.group, name, seed)
    phash = exp.params_hash()
    state = checkpoint.resume(ckpt, phash, model, optimizer) or checkpoint.RunState(phash)
    ctx = StepContext(recipe, schedule, state.step, device, runtime.precision,
                      post_update_acc=exp.mode == "faithful" and recipe.train_acc == "post_update")
    prior_s, t_start = state.elapsed_s, time.perf_counter()
    with GpuMonitor(device, runtime.nvml_interval_s) as monitor, StopSignals() as stop:
        for epoch in range(state.epoch + 1, recipe.epochs + 1):
            model.train()
            order = torch.from_numpy(epoch_order(n, seed, epoch)).to(device)
            first = state.batch                       # > 0 when resuming inside this epoch
            losses = torch.zeros(steps_per_epoch, device=device)
            losses[:first] = torch.tensor(state.partial_losses, device=device)
            correct = torch.tensor(state.partial_correct, device=device)
            synchronize(device)
            t0, checked = time.perf_counter() - state.partial_seconds, first
            with Progress(steps_per_epoch, f"{name} s{seed} epoch {epoch}/{recipe.epochs}", "batches",
                          notes_only=True) as bar:
                bar.advance(first)
                for i in range(first, steps_per_epoch):
                    idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
                    loss, hits = step_fn(model, normalize(x_train[idx]), y_train[idx], optimizer, ctx)
                    losses[i], correct = loss, correct + hits
                    state.step = ctx.updates
                    if (i + 1) % check_every == 0 or i + 1 == steps_per_epoch or stop.received:
                        bad = _nonfinite(losses, checked, i + 1)
                        if bad is not None:
                            raise NumericalError(
                                f"{name} seed {seed}: non-finite loss at epoch {epoch} batch {bad + 1} "
                                f"(optimizer update <= {ctx.updates}): cross_entropy={losses[bad].item()}; "
                                f"stopped without saving; the last good checkpoint (after epoch "
                                f"{state.epoch}, batch {state.batch}) is kept at {ckpt}")
                        checked = i + 1
                    bar.advance(1, f"loss {loss.item():.4f}" if (i + 1) % runtime.log_every_steps == 0 else "")
                    if stop.received and i + 1 < steps_per_epoch:
                        synchronize(device)
                        state.batch, state.partial_losses = i + 1, losses[:i + 1].cpu().tolist()
                        state.partial_correct = correct.item()
                        state.partial_seconds = time.perf_counter() - t0
                        state.elapsed_s = prior_s + time.perf_counter() - t_start
                        checkpoint.save(ckpt, state, model, optimizer)
                        sig = signal.Signals(stop.received)
                        raise Stopped(f"{name} seed {seed}: stopped by {sig.name} at epoch {epoch}, batch "
                                      f"{i + 1}/{steps_per_epoch}; checkpoint saved to {ckpt}; resume with "
                                      f"`python -m hrm train {name} --seed {seed}`", stop.received)
            synchronize(device)
            train_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            test_pred = predict(model, x_test, normalize, recipe.eval_batch_size, ctx.autocast)
            test_acc = (test_pred == y_test).float().mean().item()
            eval_s = time.perf_counter() - t1
            step_losses = losses.cpu().tolist()
            state.step_losses += step_losses
            state.history.append({"epoch": epoch, "train_loss": float(np.mean(step_losses)),
                                  "train_acc": correct.item() / n, "test_acc": test_acc,
                                  "lr": schedule(state.step - 1), "seconds": round(train_s, 3),
                                  "eval_seconds": round(eval_s, 3)})
            state.epoch, state.batch, state.partial_losses = epoch, 0, []
            state.partial_correct = state.partial_seconds = 0.0
            state.elapsed_s = prior_s + time.perf_counter() - t_start
            log.info("%s seed %d epoch %d/%d: train loss %.4f acc %.4f | test acc %.4f | %.1fs", name, seed,
                     epoch, recipe.epochs, state.history[-1]["train_loss"], state.history[-1]["train_acc"],
                     test_acc, train_s)
            checkpoint.save(ckpt, state, model, optimizer)
            if stop.received and epoch < recipe.epochs:
                sig = signal.Signals(stop.received)
                raise Stopped(f"{name} seed {seed}: stopped by {sig.name} after epoch {epoch}; checkpoint saved "
                              f"to {ckpt}; resume with `python -m hrm train {name} --seed {seed}`", stop.received)
    total_s = prior_s + time.perf_counter() - t_start
    _write_outputs(exp, seed, state, model, monitor, total_s, spec_params=count_params(exp.model, spec))
    checkpoint.remove(ckpt)   # finished: a rerun must retrain, not resume at the end
    return paths.model_file(exp.group, name, seed)


def _write_outputs(exp: Experiment, seed: int, state: checkpoint.RunState, model: torch.nn.Module,
                   monitor: GpuMonitor, total_s: float, spec_params: int) -> None:
    history = state.history
    best = max(history, key=lambda r: r["test_acc"])
    gpu = monitor.facts()
    metrics = {
        "experiment": exp.name, "seed": seed, "group": exp.group, "dataset": exp.dataset,
        "model": exp.model_name, "recipe": exp.recipe_name, "mode": exp.mode, "params": spec_params,
        "epochs": state.epoch, "epochs_planned": exp.recipe.epochs, "complete": state.epoch == exp.recipe.epochs,
        "optimizer_steps": state.step,
        "test_acc": history[-1]["test_acc"], "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
        "train_acc": history[-1]["train_acc"], "train_loss": history[-1]["train_loss"],
        "seconds_per_epoch": [r["seconds"] for r in history],
        "mean_seconds_per_epoch": round(float(np.mean([r["seconds"] for r in history])), 3),
        "eval_seconds_per_epoch": round(float(np.mean([r["eval_seconds"] for r in history])), 3),
        "total_seconds": round(total_s, 3), "resumed_from_epochs": state.resumed_from,
        "gpu": gpu, "provenance": provenance.record(exp.params_hash(), gpu["device_name"]),
    }
    model_path = paths.model_file(exp.group, exp.name, seed)
    with atomic_path(model_path) as tmp:
        torch.save({"experiment": exp.as_dict(), "seed": seed,
                    "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, tmp)
    write_text(paths.history_file(exp.group, exp.name, seed), _csv(history))
    write_text(paths.steps_file(exp.group, exp.name, seed),
               _csv([{"step": i + 1, "loss": round(v, 6)} for i, v in enumerate(state.step_losses)]))
    write_json(paths.metrics_file(exp.group, exp.name, seed), metrics)
