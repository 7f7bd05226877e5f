"""`hrm train` for the reasoning study: the puzzle HRM, TRM or the direct baseline, with ACT (REFERENCE II.3, V.2).

Two training schemes, chosen by `recipes.<r>.scheme`:
* carry (the author code): the ACT carry persists across batches; each optimizer step is one
  segment of a mixed batch in which only halted rows take the new batch's examples;
* minibatch (the paper's pseudocode): each batch starts fresh and loops its segments, one
  optimizer step per segment, until every row halted or M_max.
Adam-atan2 on the parameters and sign-SGD on the touched puzzle-embedding rows, both with linear
warmup then a constant rate; with `ema` (TRM) a moving average of the weights is what is evaluated
and saved as model.pt. The test set is scored (exact accuracy at M_max, no voting: that is
`hrm evaluate`'s) every `eval_interval` epochs, where a checkpoint is written (and on SIGTERM/SIGINT).
The checkpoint holds the ACT carry, the exploration RNG and the stream position, so a killed run
resumes exactly. Lock, signals, OOM, checkpoint and output files: `hrm.train.run`.

With several processes (hrm.runtime.distributed) each rank holds its rows of every batch and of the ACT
carry; the loss is scaled by 1/global batch and the gradients summed over the ranks; the touched
puzzle-embedding rows and their gradients are gathered from all ranks, so every rank applies the
one process's sign-SGD update; a checkpoint holds the whole carry, whatever the number of ranks.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from hrm.core.errors import HrmError, NumericalError
from hrm.core.losses import act_loss
from hrm.core.progress import Progress
from hrm.data.puzzles import stream
from hrm.evaluate.puzzle_pass import score_puzzles
from hrm.evaluate.voting import Votes, arc_votes
from hrm.models.act import ActState, act_step, initial_state
from hrm.models.hrm import Carry
from hrm.models.optim import AdamAtan2, set_lr, sign_sgd_rows
from hrm.models.registry import build_model, count_params
from hrm.pipeline import studies
from hrm.pipeline.config import Experiment, Params, PuzzleRecipe
from hrm.runtime.distributed import Ranks
from hrm.runtime.speed import apply_precision, compile_model, cuda_graphs, mark_step
from hrm.train.ema import EMA
from hrm.train.run import Run

log = logging.getLogger("hrm")
POOL = "pooled_votes_"        # checkpoint keys of the pooled vote table


def warmup_constant(step: int, peak: float, warmup: int) -> float:
    return peak * min(1.0, (step + 1) / warmup) if warmup else peak


class PuzzleRun(Run):
    load_data = staticmethod(stream.load)
    synthetic_data = staticmethod(stream.synthetic)     # random data of the set's shape (hrm bench)

    def __init__(self, params: Params, exp: Experiment, seed: int, data: stream.PuzzleData,
                 ranks: Ranks | None = None) -> None:
        super().__init__(params, exp, seed, ranks)
        assert isinstance(exp.recipe, PuzzleRecipe)
        self.data, self.recipe = data, exp.recipe
        self.shape = studies.shape(exp.dataset, data.num_ids)
        self.model = build_model(exp.model, self.shape)
        self.model.init_weights(torch.Generator().manual_seed(seed))
        self.model.to(self.device)
        self.autocast = apply_precision(self.model, self.device, self.runtime.precision)
        r = self.recipe
        self.optimizer = AdamAtan2(list(self.model.parameters()), r.lr, r.betas, r.weight_decay, self.runtime.optimizer)
        self.compiled = compile_model(self.model, self.runtime, self.device)
        self.ema = EMA(self.model, r.ema) if r.ema else None     # TRM: evaluation and model.pt use the average
        self.own_carry = cuda_graphs(self.runtime, self.device)
        # The training set on the device (runtime.data_on_device): a batch is then a gather there.
        self.resident = (stream.DeviceSplit(data.train, self.device) if self.runtime.data_on_device else None)
        self.total = stream.total_steps(data.train, r.epochs, r.batch_size)
        if self.total < 1:
            raise HrmError(f"{exp.name}: {r.epochs} epochs of {exp.dataset} give no full batch of {r.batch_size}; "
                           f"lower recipes.{exp.recipe_name}.batch_size")
        self.batches_per_epoch = data.train.groups * data.train.meta.mean_puzzle_examples / r.batch_size
        self.eval_every = max(1, round(r.eval_interval * self.batches_per_epoch))
        self.gen = torch.Generator().manual_seed(seed)    # ACT exploration draws (CPU, checkpointed)
        self.act: ActState | None = None
        self.pending: list[torch.Tensor] = []             # per-batch loss rows not yet brought to the host
        # Bringing losses to the host is a sync: every batch on the CPU (free), every log interval on a GPU.
        self.check_every = 1 if self.device.type == "cpu" else self.runtime.log_every_steps
        # TRM's pooled voting: one vote table over every evaluation of the run (hrm.evaluate.voting).
        self.pool = Votes() if r.pooled_voting and data.tasks is not None else None

    # ---- exact resume: the ACT carry and the exploration RNG (the stream is a function of seed and position)
    def extra_state(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"act_rng": self.gen.get_state(), **(self.ema.state() if self.ema else {})}
        if self.act is not None:            # the whole carry: every rank's rows, in rank order
            a, g = self.act, self.ranks.gather
            extra |= {"act_z_h": g(a.carry.z_h), "act_z_l": g(a.carry.z_l), "act_steps": g(a.steps),
                      "act_halted": g(a.halted), "act_inputs": g(a.inputs), "act_labels": g(a.labels),
                      "act_puzzle_ids": g(a.puzzle_ids)}
        extra |= self.pool_state()
        return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in extra.items()}

    def pool_state(self) -> dict[str, torch.Tensor]:
        if self.pool is None:
            return {}
        return {POOL + k: torch.from_numpy(v) for k, v in self.pool.arrays().items()}

    def load_extra(self, extra: dict[str, Any]) -> None:
        if self.pool is not None and POOL + "count" in extra:
            self.pool = Votes.from_arrays({k.removeprefix(POOL): v.numpy() for k, v in extra.items()
                                           if k.startswith(POOL)})
        if "act_rng" in extra:
            self.gen.set_state(extra["act_rng"])
        if self.ema is not None:
            self.ema.load(extra)
        if "act_z_h" in extra:
            rows = self.ranks.share(len(extra["act_z_h"]))             # this rank's rows of the saved carry
            t = {k: v[rows].to(self.device) for k, v in extra.items() if k.startswith("act_") and k != "act_rng"}
            self.act = ActState(Carry(t["act_z_h"], t["act_z_l"]), t["act_steps"], t["act_halted"], t["act_inputs"],
                                t["act_labels"], t["act_puzzle_ids"])

    def setup(self) -> None:
        s = self.state
        self.stream = stream.Stream(self.data.train, self.seed, self.recipe.batch_size, s.epoch + 1, s.offset)

    # ---- training
    @property
    def batches_done(self) -> int:
        return self.state.batches + len(self.pending)      # one loss row per batch

    def finished(self) -> bool:
        """The schedule (in batches) is done, or the recipe's budget of optimizer steps is spent."""
        budget = self.recipe.max_steps
        return self.batches_done >= self.total or (budget > 0 and self.state.step >= budget)

    def learning_rates(self, step: int) -> dict[str, float]:
        """The rates of update `step` (counted from 0): the weights' and the puzzle embeddings'."""
        r = self.recipe
        return {"lr": warmup_constant(step, r.lr, r.warmup_steps),
                "puzzle_emb_lr": warmup_constant(step, r.puzzle_emb_lr, r.warmup_steps)}

    def plan(self) -> dict[str, int]:
        """The run's length in batches, when it is scored, and its budget of updates."""
        return {"epochs": self.recipe.epochs, "batches": self.total, "eval_every": self.eval_every,
                "max_steps": self.recipe.max_steps}

    def batches(self, epoch: int = 1) -> Iterator[np.ndarray]:
        """Endless training batches (example indices) in the stream's order from `epoch` on; the run's own
        stream when `epoch` is where it stands."""
        feed = self.stream if epoch == self.stream.epoch else stream.Stream(
            self.data.train, self.seed, self.recipe.batch_size, epoch)
        while True:
            yield feed.next()

    def probe_test(self, n: int) -> dict[str, Any]:
        """The training loop's test pass (the weights it evaluates) on the first `n` test examples, at M_max:
        its scores, predicted tokens and halting confidences."""
        m_max, got = self.exp.model.halt_max_steps, {}

        def keep(m: int, idx: np.ndarray, pred: torch.Tensor, conf: torch.Tensor) -> None:
            got.update(predictions=pred, q_halt=conf)

        with self.averaged():
            scores = score_puzzles(self.model, self.data.test.head(n), self.recipe.eval_batch_size, self.device,
                                   self.autocast, (m_max,), keep)[m_max]
        return {**got, **scores}

    def update(self, loss: torch.Tensor, batch: int, touched: Any) -> None:
        """One optimizer step on the loss summed over this rank's rows; `batch` is the global batch."""
        r, s = self.recipe, self.state
        rates = self.learning_rates(s.step)
        (loss / batch).backward()
        self.ranks.grads(self.model.parameters())
        set_lr(self.optimizer, rates["lr"])
        self.optimizer.step()
        if touched is not None and touched.rows.grad is not None:
            sign_sgd_rows(self.model.puzzle.table, self.ranks.gather(touched.ids),
                          self.ranks.gather(touched.rows.grad), rates["puzzle_emb_lr"], r.puzzle_emb_weight_decay)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        s.step += 1

    def segment(self, x: torch.Tensor, y: torch.Tensor, pid: torch.Tensor, batch: int) -> torch.Tensor:
        """One ACT segment and one update on this rank's rows of a global batch of `batch`. Returns, on the
        device (no host sync here), over the global batch: [loss per example, lm, bce_halt, bce_continue,
        exact accuracy of the rows that halted (nan if none)]."""
        if self.act is None:
            self.act = initial_state(self.model, x, y, pid)
        share = (batch, self.ranks.share(batch)) if self.ranks.world > 1 else None
        with self.autocast:
            self.act, out = act_step(self.model, self.act, x, y, pid, self.gen, share)
        if self.own_carry:      # CUDA graphs reuse their output memory at the next step: keep a copy
            self.act.carry = Carry(self.act.carry.z_h.clone(), self.act.carry.z_l.clone())
        losses = act_loss(out.out.logits, self.act.labels, out.out.q_halt, out.out.q_continue, out.target_q_continue)
        self.update(losses.total, batch, out.out.puzzle_rows)
        halted = self.act.halted
        t = self.ranks.sum(torch.stack([losses.total, losses.lm, losses.q_halt, losses.q_continue,     # over ranks
                                        (losses.seq_correct & halted).sum(), halted.sum()]).detach().double())
        return torch.stack([t[0] / batch, t[1], t[2], t[3], t[4] / t[5]])     # 0/0 = nan when no row halted

    def flush(self) -> None:
        """Bring the pending batches' losses to the host (one sync) and stop on the first non-finite one."""
        if not self.pending:
            return
        rows = torch.stack(self.pending).cpu()
        first = self.state.batches
        self.pending.clear()
        bad = (~torch.isfinite(rows[:, :4])).any(dim=1).nonzero()
        if len(bad):
            b = int(bad[0])
            total, lm, q_halt, q_cont = rows[b, :4].tolist()
            raise NumericalError(
                f"{self.label}: non-finite loss at batch {first + b + 1}: total={total}, lm={lm}, q_halt={q_halt}, "
                f"q_continue={q_cont}; stopped without saving; the last good checkpoint is kept at {self.ckpt}")
        self.state.step_losses += [round(v, 6) for v in rows[:, 0].tolist()]
        self.state.since_eval["train_acc"] = float(rows[-1, 4])

    def loop(self) -> None:
        self.model.train()
        with Progress(self.total, self.label, "batches") as bar:
            bar.skip(self.batches_done)
            while not self.finished():
                self.one_batch(bar)

    def one_batch(self, bar: Progress) -> None:
        """Train on the next batch; flush, log, evaluate and checkpoint when due."""
        s = self.state
        self.pending.append(self.train_batch(self.stream.next()))
        s.epoch, s.offset = self.stream.epoch - 1, self.stream.offset
        done, evaluate = self.batches_done, self.finished() or self.batches_done % self.eval_every == 0
        due = done % self.check_every == 0 or evaluate
        if due or self.stop.received:
            self.flush()
        logged = done % self.runtime.log_every_steps == 0          # losses are on the host then
        bar.advance(1, f"update {s.step}, loss {s.step_losses[-1]:.4f}, halted-row exact acc "
                       f"{s.since_eval.get('train_acc', math.nan):.3f}" if logged else "")
        if evaluate:
            self.evaluate_now()
        if self.should_stop(due):
            self.save()
            raise self.stopped(f"at update {s.step}")

    def train_batch(self, idx: np.ndarray) -> torch.Tensor:
        """Train on the examples `idx` as the recipe's scheme says; the last segment's loss row (device)."""
        mark_step(self.runtime, self.device)
        batch, idx = len(idx), idx[self.ranks.share(len(idx))]        # this rank's rows
        if self.resident is not None:
            x, y, pid = self.resident.tensors(idx)
        else:
            x, y, pid = stream.tensors(self.data.train, idx, self.stream.puzzle_of, self.device)
        if self.recipe.scheme == "carry":
            return self.segment(x, y, pid, batch)
        self.act = None
        for _ in range(self.exp.model.halt_max_steps):
            row = self.segment(x, y, pid, batch)
            if self.ranks.all(self.act.halted.all()):     # a host sync, inherent to this scheme
                break
        self.act = None                                   # the next batch starts fresh
        return row

    def evaluate_now(self) -> None:
        """Exact accuracy of the test set at M_max (no voting), a history row, a checkpoint."""
        s, m_max = self.state, self.exp.model.halt_max_steps
        t0 = self.elapsed()
        votes, _, each = arc_votes(self.data, [m_max]) if self.pool is not None else ({}, {}, None)
        with self.averaged():
            scores = score_puzzles(self.model, self.data.test, self.recipe.eval_batch_size, self.device,
                                   self.autocast, (m_max,), each, pad=self.compiled)[m_max]
        if self.pool is not None:
            self.pool.merge(votes[m_max])
        s.history.append({"step": s.step, "batch": self.batches_done,
                          "epoch": s.epoch + s.offset / max(1, len(self.stream.order)),
                          "train_loss": float(np.mean(s.step_losses[-self.eval_every:])),
                          "train_acc": s.since_eval.get("train_acc", math.nan), "test_acc": scores["exact_acc"],
                          "test_token_acc": scores["token_acc"],
                          "lr": self.learning_rates(s.step - 1)["lr"],
                          "seconds": round(self.elapsed(), 3), "eval_seconds": round(self.elapsed() - t0, 3)})
        log.info("%s update %d: test exact accuracy %.4f, token accuracy %.4f", self.label, s.step,
                 scores["exact_acc"], scores["token_acc"])
        self.save()

    def averaged(self) -> contextlib.AbstractContextManager[None]:
        """The moving-average weights in place (TRM), or the weights as they are."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def write_outputs(self, monitor: Any) -> None:
        with self.averaged():                  # model.pt holds what was evaluated
            super().write_outputs(monitor)

    def model_extra(self) -> dict[str, Any]:
        """model.pt also holds the pooled votes, for `hrm evaluate` (with the evaluations they pool)."""
        if self.pool is None:
            return {}
        return {"pooled_votes": {k.removeprefix(POOL): v for k, v in self.pool_state().items()},
                "pooled_evaluations": len(self.state.history)}

    def metrics(self, best: dict[str, Any]) -> dict[str, Any]:
        done = self.batches_done
        epochs_done = done / self.batches_per_epoch
        return {"scheme": self.recipe.scheme, "params": count_params(self.exp.model, self.shape),
                "epochs": math.floor(epochs_done) if done < self.total else self.recipe.epochs,
                "epochs_planned": self.recipe.epochs, "complete": done >= self.total,
                "batches": done, "batches_planned": self.total, "best_step": best["step"],
                "mean_seconds_per_epoch": round(self.elapsed() / max(epochs_done, 1e-9), 3),
                "test_metric": "exact accuracy of the test examples at M_max (voting: eval.json)",
                "weights": f"moving average, rate {self.recipe.ema}" if self.ema is not None else "as trained"}


RUN = PuzzleRun                 # the fingerprint probe builds runs through it
train = RUN.train
