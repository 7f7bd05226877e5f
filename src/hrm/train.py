"""`hrm train EXPERIMENT --seed S`: the image-classification training loop (REFERENCE I.2-I.5).

The whole data set sits on the device as uint8 and is normalised per batch; the only host->device
copy per epoch is the shuffled index order (numpy PCG64 seeded with seed + epoch, as the author
code). The test set is evaluated after every epoch; a checkpoint is written at every epoch end and,
on SIGTERM/SIGINT, mid-epoch. What one batch does lives in `hrm.steps`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch

from hrm import checkpoint, paths, provenance
from hrm.atomic import atomic_path, write_json, write_text
from hrm.config import Experiment, Params, Runtime
from hrm.data import build as built
from hrm.data.sources import DATASETS
from hrm.errors import HrmError, NumericalError, Stopped
from hrm.evaluate import Normalizer, predict
from hrm.gpu import GpuMonitor, resolve_device, synchronize
from hrm.guard import RunLock, StopSignals
from hrm.models.registry import build_model, count_params
from hrm.optim import adamw
from hrm.progress import Progress
from hrm.steps import BATCH_STEPS, StepContext, compile_model, make_schedule

__all__ = ["BATCH_STEPS", "epoch_order", "make_schedule", "train"]
log = logging.getLogger("hrm")


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
            return Trainer(params, exp, seed, data).run()
        except torch.cuda.OutOfMemoryError:
            r = exp.recipe
            raise HrmError(f"{name} seed {seed}: CUDA out of memory with batch size {r.batch_size} "
                           f"(eval {r.eval_batch_size}); lower recipes.{exp.recipe_name}.batch_size "
                           f"(or .eval_batch_size) in {params.path}, or set runtime.precision: bf16; "
                           f"no outputs were written, earlier checkpoints are kept") from None


class Trainer:
    """One run: model, optimizer and data on the device, its checkpoint, and the epoch loop."""

    def __init__(self, params: Params, exp: Experiment, seed: int, data: built.ImageData) -> None:
        self.exp, self.seed, self.runtime, self.recipe = exp, seed, params.runtime, exp.recipe
        self.spec = DATASETS[exp.dataset]
        self.device = resolve_device(self.runtime.device)
        configure_torch(self.runtime)
        self.x_train, self.y_train, self.x_test, self.y_test = _place(data, self.device)
        self.normalize = Normalizer(data, self.device)
        self.model = build_model(exp.model, self.spec)
        self.model.init_weights(torch.Generator().manual_seed(seed))
        self.model.to(self.device)
        self.optimizer = adamw(list(self.model.parameters()), self.recipe)
        self.steps_per_epoch = math.ceil(len(self.x_train) / self.recipe.batch_size)
        self.step_fn = BATCH_STEPS[exp.model.kind]
        if self.runtime.compile and self.device.type == "cuda":
            compile_model(self.model)
        # A NaN check is a host sync: every batch on the CPU (free), every log interval on a GPU.
        self.check_every = 1 if self.device.type == "cpu" else self.runtime.log_every_steps
        self.ckpt = paths.checkpoint_file(exp.group, exp.name, seed)
        phash = exp.params_hash()
        self.state = checkpoint.resume(self.ckpt, phash, self.model, self.optimizer) or checkpoint.RunState(phash)
        self.ctx = StepContext(self.recipe, make_schedule(exp, self.steps_per_epoch), self.state.step, self.device,
                               self.runtime.precision,
                               post_update_acc=exp.mode == "faithful" and self.recipe.train_acc == "post_update")
        self.stop = StopSignals()
        self.prior_s, self.t_start = self.state.elapsed_s, time.perf_counter()

    @property
    def label(self) -> str:
        return f"{self.exp.name} seed {self.seed}"

    def run(self) -> Path:
        with GpuMonitor(self.device, self.runtime.nvml_interval_s) as monitor, self.stop:
            for epoch in range(self.state.epoch + 1, self.recipe.epochs + 1):
                losses, correct, train_s = self.train_epoch(epoch)
                self.end_epoch(epoch, losses, correct, train_s)
        total_s = self.prior_s + time.perf_counter() - self.t_start
        _write_outputs(self.exp, self.seed, self.state, self.model, monitor, total_s,
                       spec_params=count_params(self.exp.model, self.spec))
        checkpoint.remove(self.ckpt)   # finished: a rerun must retrain, not resume at the end
        return paths.model_file(self.exp.group, self.exp.name, self.seed)

    def train_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """All batches of one epoch (from state.batch when resuming inside it)."""
        s, bs, n_batches = self.state, self.recipe.batch_size, self.steps_per_epoch
        self.model.train()
        order = torch.from_numpy(epoch_order(len(self.x_train), self.seed, epoch)).to(self.device)
        losses = torch.zeros(n_batches, device=self.device)
        losses[:s.batch] = torch.tensor(s.partial_losses, device=self.device)
        correct = torch.tensor(s.partial_correct, device=self.device)
        synchronize(self.device)
        t0, checked = time.perf_counter() - s.partial_seconds, s.batch
        with Progress(n_batches, f"{self.exp.name} s{self.seed} epoch {epoch}/{self.recipe.epochs}", "batches",
                      notes_only=True) as bar:
            bar.advance(s.batch)
            for i in range(s.batch, n_batches):
                idx = order[i * bs:(i + 1) * bs]
                loss, hits = self.step_fn(self.model, self.normalize(self.x_train[idx]), self.y_train[idx],
                                          self.optimizer, self.ctx)
                losses[i], correct, s.step = loss, correct + hits, self.ctx.updates
                if (i + 1) % self.check_every == 0 or i + 1 == n_batches or self.stop.received:
                    self.check_finite(losses, checked, i + 1, epoch)
                    checked = i + 1
                every = self.runtime.log_every_steps
                bar.advance(1, f"loss {loss.item():.4f}" if (i + 1) % every == 0 else "")
                if self.stop.received and i + 1 < n_batches:
                    synchronize(self.device)
                    s.batch, s.partial_losses = i + 1, losses[:i + 1].cpu().tolist()
                    s.partial_correct, s.partial_seconds = correct.item(), time.perf_counter() - t0
                    self.save()
                    raise self.stopped(f"at epoch {epoch}, batch {i + 1}/{n_batches}")
        synchronize(self.device)
        return losses, correct, time.perf_counter() - t0

    def check_finite(self, losses: torch.Tensor, lo: int, hi: int, epoch: int) -> None:
        """Stop on the first NaN/Inf loss in losses[lo:hi], before anything is checkpointed."""
        bad = (~torch.isfinite(losses[lo:hi])).nonzero()
        if len(bad):
            b = lo + int(bad[0])
            raise NumericalError(
                f"{self.label}: non-finite loss at epoch {epoch} batch {b + 1} (optimizer update <= "
                f"{self.ctx.updates}): cross_entropy={losses[b].item()}; stopped without saving; the last good "
                f"checkpoint (after epoch {self.state.epoch}, batch {self.state.batch}) is kept at {self.ckpt}")

    def save(self) -> None:
        self.state.elapsed_s = self.prior_s + time.perf_counter() - self.t_start
        checkpoint.save(self.ckpt, self.state, self.model, self.optimizer)

    def stopped(self, where: str) -> Stopped:
        assert self.stop.received is not None
        return Stopped(f"{self.label}: stopped by {signal.Signals(self.stop.received).name} {where}; checkpoint "
                       f"saved to {self.ckpt}; resume with `python -m hrm train {self.exp.name} --seed {self.seed}`",
                       self.stop.received)

    def end_epoch(self, epoch: int, losses: torch.Tensor, correct: torch.Tensor, train_s: float) -> None:
        """Test pass, history row, checkpoint; then stop if a signal arrived during the epoch."""
        s = self.state
        t1 = time.perf_counter()
        pred = predict(self.model, self.x_test, self.normalize, self.recipe.eval_batch_size, self.ctx.autocast)
        test_acc = (pred == self.y_test).float().mean().item()
        eval_s = time.perf_counter() - t1
        step_losses = losses.cpu().tolist()
        s.step_losses += step_losses
        s.history.append({"epoch": epoch, "train_loss": float(np.mean(step_losses)),
                          "train_acc": correct.item() / len(self.x_train), "test_acc": test_acc,
                          "lr": self.ctx.schedule(s.step - 1), "seconds": round(train_s, 3),
                          "eval_seconds": round(eval_s, 3)})
        s.epoch, s.batch, s.partial_losses, s.partial_correct, s.partial_seconds = epoch, 0, [], 0.0, 0.0
        row = s.history[-1]
        log.info("%s epoch %d/%d: train loss %.4f acc %.4f | test acc %.4f | %.1fs", self.label, epoch,
                 self.recipe.epochs, row["train_loss"], row["train_acc"], test_acc, train_s)
        self.save()
        if self.stop.received and epoch < self.recipe.epochs:
            raise self.stopped(f"after epoch {epoch}")


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
