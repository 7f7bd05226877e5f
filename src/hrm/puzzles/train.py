"""`hrm train` for the reasoning study: the puzzle HRM (or the direct baseline) with ACT (REFERENCE II.3).

Two training schemes, chosen by `recipes.<r>.scheme`:
* carry (the author code): the ACT carry persists across batches; each optimizer step is one
  segment of a mixed batch in which only halted rows take the new batch's examples;
* minibatch (the paper's pseudocode): each batch starts fresh and loops its segments, one
  optimizer step per segment, until every row halted or M_max.
Adam-atan2 on the parameters and sign-SGD on the touched puzzle-embedding rows, both with linear
warmup then a constant rate. The test set is scored every `eval_interval` epochs, where a
checkpoint is also written (and on SIGTERM/SIGINT). A resumed run restarts the ACT carry with
every row halted (the author code does not checkpoint it either).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch

from hrm import checkpoint, paths, provenance
from hrm.atomic import atomic_path, write_json, write_text
from hrm.config import Experiment, Params
from hrm.errors import HrmError, NumericalError, Stopped
from hrm.gpu import GpuMonitor, autocast, resolve_device
from hrm.guard import RunLock, StopSignals
from hrm.losses import act_loss
from hrm.models.act import act_step, initial_state
from hrm.models.hrm import build_puzzle
from hrm.models.registry import count_params
from hrm.optim import AdamAtan2, set_lr, sign_sgd_rows
from hrm.puzzles import data as pdata
from hrm.puzzles.score import score_test
from hrm.puzzles.sources import PUZZLES
from hrm.train import _csv, configure_torch

log = logging.getLogger("hrm")


def warmup_constant(step: int, peak: float, warmup: int) -> float:
    return peak * min(1.0, (step + 1) / warmup) if warmup else peak


def build(exp: Experiment, data: pdata.PuzzleData, seed: int, device: torch.device) -> torch.nn.Module:
    meta = data.train.meta
    model = build_puzzle(exp.model, meta.vocab_size, meta.seq_len, data.num_ids)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model.to(device)


def train(params: Params, name: str, seed: int) -> Path:
    exp = params.experiment(name)
    data = pdata.load(exp.dataset)
    with RunLock(paths.run_dir(exp.group, name, seed)):
        try:
            return PuzzleTrainer(params, exp, seed, data).run()
        except torch.cuda.OutOfMemoryError:
            raise HrmError(f"{name} seed {seed}: CUDA out of memory with batch size {exp.recipe.batch_size}; lower "
                           f"recipes.{exp.recipe_name}.batch_size in {params.path}; earlier checkpoints are kept") from None


class PuzzleTrainer:
    def __init__(self, params: Params, exp: Experiment, seed: int, data: pdata.PuzzleData) -> None:
        self.exp, self.seed, self.data, self.recipe, self.runtime = exp, seed, data, exp.recipe, params.runtime
        self.device = resolve_device(self.runtime.device)
        configure_torch(self.runtime)
        self.model = build(exp, data, seed, self.device)
        r = self.recipe
        self.optimizer = AdamAtan2(list(self.model.parameters()), r.lr, r.betas, r.weight_decay)
        self.total = pdata.total_steps(data.train, r.epochs, r.batch_size)
        if self.total < 1:
            raise HrmError(f"{exp.name}: {r.epochs} epochs of {exp.dataset} give no full batch of {r.batch_size}; "
                           f"lower recipes.{exp.recipe_name}.batch_size")
        per_epoch = data.train.groups * data.train.meta.mean_puzzle_examples / r.batch_size
        self.eval_every = max(1, round(r.eval_interval * per_epoch))
        self.ckpt = paths.checkpoint_file(exp.group, exp.name, seed)
        phash = exp.params_hash()
        self.state = checkpoint.resume(self.ckpt, phash, self.model, self.optimizer) or checkpoint.RunState(phash, epoch=1)
        self.stream = pdata.Stream(data.train, seed, r.batch_size, self.state.epoch, self.state.batch)
        self.gen = torch.Generator().manual_seed(seed * 7919 + self.state.step)
        self.act = None
        self.pending: list[torch.Tensor] = []           # per-batch loss rows not yet brought to the host
        self.last_acc = float("nan")
        # Bringing losses to the host is a sync: every batch on the CPU (free), every log interval on a GPU.
        self.check_every = 1 if self.device.type == "cpu" else self.runtime.log_every_steps
        self.autocast = autocast(self.device, self.runtime.precision)
        self.stop = StopSignals()
        self.prior_s, self.t_start = self.state.elapsed_s, time.perf_counter()

    @property
    def label(self) -> str:
        return f"{self.exp.name} seed {self.seed}"

    @property
    def batches_done(self) -> int:
        return len(self.state.step_losses) + len(self.pending)   # one loss row per batch

    def finished(self) -> bool:
        """The schedule (in batches) is done, or the recipe's budget of optimizer steps is spent."""
        budget = self.recipe.max_steps
        return self.batches_done >= self.total or (budget > 0 and self.state.step >= budget)

    def update(self, loss: torch.Tensor, batch: int) -> None:
        r, s = self.recipe, self.state
        (loss / batch).backward()
        lr = warmup_constant(s.step, r.lr, r.warmup_steps)
        set_lr(self.optimizer, lr)
        self.optimizer.step()
        emb = self.model.puzzle
        if emb.local is not None and emb.local.grad is not None:
            sign_sgd_rows(emb.table, emb.ids, emb.local.grad, warmup_constant(s.step, r.puzzle_emb_lr, r.warmup_steps),
                          r.puzzle_emb_weight_decay)
            emb.local = None
        self.optimizer.zero_grad(set_to_none=True)
        s.step += 1

    def segment(self, x: torch.Tensor, y: torch.Tensor, pid: torch.Tensor) -> torch.Tensor:
        """One ACT segment and one update. Returns, still on the device (no host sync here):
        [loss per example, lm, bce_halt, bce_continue, exact accuracy of the rows that halted (nan if none)]."""
        if self.act is None:
            self.act = initial_state(self.model, x, y, pid)
        with self.autocast:
            self.act, out = act_step(self.model, self.act, x, y, pid, self.gen)
        losses = act_loss(out.out.logits, self.act.labels, out.out.q_halt, out.out.q_continue, out.target_q_continue)
        self.update(losses.total, len(x))
        halted = self.act.halted
        acc = (losses.seq_correct & halted).sum() / halted.sum()      # 0/0 = nan when no row halted
        return torch.stack([losses.total / len(x), losses.lm, losses.q_halt, losses.q_continue, acc]).detach().double()

    def flush(self) -> None:
        """Bring the pending batches' losses to the host (one sync) and stop on the first non-finite one."""
        if not self.pending:
            return
        rows = torch.stack(self.pending).cpu()
        first = len(self.state.step_losses)
        self.pending.clear()
        bad = (~torch.isfinite(rows[:, :4])).any(dim=1).nonzero()
        if len(bad):
            b = int(bad[0])
            total, lm, q_halt, q_cont = rows[b, :4].tolist()
            raise NumericalError(
                f"{self.label}: non-finite loss at batch {first + b + 1}: total={total}, lm={lm}, q_halt={q_halt}, "
                f"q_continue={q_cont}; stopped without saving; the last good checkpoint is kept at {self.ckpt}")
        self.state.step_losses += [round(v, 6) for v in rows[:, 0].tolist()]
        self.last_acc = float(rows[-1, 4])

    def run(self) -> Path:
        r, s = self.recipe, self.state
        self.model.train()
        with GpuMonitor(self.device, self.runtime.nvml_interval_s) as monitor, self.stop:
            while not self.finished():
                idx = self.stream.next()
                x, y, pid = pdata.tensors(self.data.train, idx, self.stream.puzzle_of, self.device)
                if r.scheme == "carry":
                    row = self.segment(x, y, pid)
                else:
                    self.act = None
                    for _ in range(self.exp.model.halt_max_steps):
                        row = self.segment(x, y, pid)
                        if bool(self.act.halted.all()):
                            break
                self.pending.append(row)
                s.epoch, s.batch = self.stream.epoch, self.stream.offset
                done, evaluate = self.batches_done, self.finished() or self.batches_done % self.eval_every == 0
                if done % self.check_every == 0 or evaluate or self.stop.received:
                    self.flush()
                if done % self.runtime.log_every_steps == 0:
                    log.info("%s batch %d/%d (update %d): loss %.4f, halted-row exact acc %.3f", self.label,
                             done, self.total, s.step, s.step_losses[-1], self.last_acc)
                if evaluate:
                    self.evaluate_now(self.last_acc)
                if self.stop.received:
                    self.save()
                    raise Stopped(f"{self.label}: stopped by {signal.Signals(self.stop.received).name} at step "
                                  f"{s.step}; checkpoint saved to {self.ckpt}; resume with `python -m hrm train "
                                  f"{self.exp.name} --seed {self.seed}`", self.stop.received)
        self.write_outputs(monitor)
        checkpoint.remove(self.ckpt)
        return paths.model_file(self.exp.group, self.exp.name, self.seed)

    def evaluate_now(self, train_acc: float) -> None:
        t0 = time.perf_counter()
        scores = score_test(self.model, self.data, self.recipe.eval_batch_size, self.device, self.autocast,
                            (self.exp.model.halt_max_steps,))
        head = scores[str(self.exp.model.halt_max_steps)]
        s = self.state
        s.history.append({"step": s.step, "batch": self.batches_done, "epoch": s.epoch - 1 + s.batch / max(1, len(self.stream.order)),
                          "train_loss": float(np.mean(s.step_losses[-self.eval_every:])), "train_acc": train_acc,
                          "test_acc": head["headline"], "lr": warmup_constant(s.step - 1, self.recipe.lr,
                                                                               self.recipe.warmup_steps),
                          "seconds": round(self.prior_s + time.perf_counter() - self.t_start, 3),
                          "eval_seconds": round(time.perf_counter() - t0, 3)})
        log.info("%s step %d: test %s %.4f", self.label, s.step, head["headline_name"], head["headline"])
        self.model.train()
        self.save()

    def save(self) -> None:
        self.state.elapsed_s = self.prior_s + time.perf_counter() - self.t_start
        checkpoint.save(self.ckpt, self.state, self.model, self.optimizer)

    def write_outputs(self, monitor: GpuMonitor) -> None:
        exp, s = self.exp, self.state
        gpu = monitor.facts()
        best = max(s.history, key=lambda h: h["test_acc"])
        total_s = self.prior_s + time.perf_counter() - self.t_start
        batches_per_epoch = self.total / self.recipe.epochs
        done = self.batches_done
        metrics = {
            "experiment": exp.name, "seed": self.seed, "group": exp.group, "dataset": exp.dataset,
            "model": exp.model_name, "recipe": exp.recipe_name, "mode": exp.mode, "scheme": self.recipe.scheme,
            "params": count_params(exp.model, PUZZLES[exp.dataset]),
            "epochs": math.floor(done / batches_per_epoch) if done < self.total else self.recipe.epochs,
            "epochs_planned": self.recipe.epochs, "complete": done >= self.total,
            "batches": done, "batches_planned": self.total, "optimizer_steps": s.step,
            "test_acc": s.history[-1]["test_acc"], "best_test_acc": best["test_acc"], "best_step": best["step"],
            "train_acc": s.history[-1]["train_acc"], "train_loss": s.history[-1]["train_loss"],
            "mean_seconds_per_epoch": round(total_s / max(done / batches_per_epoch, 1e-9), 3),
            "total_seconds": round(total_s, 3), "resumed_from_epochs": s.resumed_from,
            "gpu": gpu, "provenance": provenance.record(exp.params_hash(), gpu["device_name"]),
        }
        with atomic_path(paths.model_file(exp.group, exp.name, self.seed)) as tmp:
            torch.save({"experiment": exp.as_dict(), "seed": self.seed,
                        "state_dict": {k: v.cpu() for k, v in self.model.state_dict().items()}}, tmp)
        write_text(paths.history_file(exp.group, exp.name, self.seed), _csv(s.history))
        write_text(paths.steps_file(exp.group, exp.name, self.seed),
                   _csv([{"step": i + 1, "loss": v} for i, v in enumerate(s.step_losses)]))
        write_json(paths.metrics_file(exp.group, exp.name, self.seed), metrics)
