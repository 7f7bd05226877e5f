"""The run harness both trainers share: the run lock, the graceful stop on signals, the OOM message,
the checkpoint (one `RunState` whose fields mean the same in both studies) and the output files.

A trainer subclasses `Run` and implements `setup()` (after the state is restored), `loop()`,
`extra_state()` / `load_extra()` for what only it needs to resume exactly, and `metrics()`.
`Run.execute()` does the rest: lock, resume, signals, NVML, outputs, checkpoint removal.

With several processes (hrm.runtime.distributed) every rank runs the same loop on its rows of each batch;
rank 0 alone holds the lock and writes checkpoints and outputs; the ranks agree on a stop signal
(`should_stop`) so that all save and leave at the same batch; NVML figures are summed over them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch

from hrm.core import checkpoint, paths, provenance
from hrm.core.atomic import together, write_bytes, write_json, write_text
from hrm.core.errors import HrmError, Stopped
from hrm.core.gpu import GpuMonitor, resolve_device, sum_over_ranks
from hrm.core.locks import RunLock
from hrm.pipeline.config import Experiment, Params, Runtime
from hrm.runtime.distributed import Ranks, group

log = logging.getLogger("hrm")


class StopSignals:
    """Turn SIGTERM/SIGINT into a flag the training loop checks after every batch."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            log.warning("received %s: stopping after this batch", signal.Signals(signum).name)
        self.received = signum

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


def configure_torch(runtime: Runtime) -> None:
    if runtime.num_threads:
        torch.set_num_threads(runtime.num_threads)
    if runtime.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def csv_text(rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class Run:
    """One training run of either study; see the module docstring for what a subclass provides."""

    def __init__(self, params: Params, exp: Experiment, seed: int, ranks: Ranks | None = None) -> None:
        self.params, self.exp, self.seed, self.runtime = params, exp, seed, params.runtime
        self.ranks = ranks or Ranks.single()
        self.device = resolve_device(self.runtime.device)
        configure_torch(self.runtime)
        self.ckpt = paths.checkpoint_file(exp.group, exp.name, seed)
        self.stop = StopSignals()
        self.state = checkpoint.RunState(exp.params_hash())
        self.model: torch.nn.Module
        self.optimizer: torch.optim.Optimizer

    @property
    def label(self) -> str:
        return f"{self.exp.name} seed {self.seed}"

    # ---- what a trainer provides
    def setup(self) -> None:
        """Build what depends on the (possibly restored) state: data order, step context, carries."""

    def loop(self) -> None:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Tensors and RNG states beyond model, optimizer and RunState that an exact resume needs."""
        return {}

    def load_extra(self, extra: dict[str, Any]) -> None:
        pass

    def model_extra(self) -> dict[str, Any]:
        """What model.pt holds beside the weights for this trainer's evaluation."""
        return {}

    def metrics(self, best: dict[str, Any]) -> dict[str, Any]:
        """The study's own metrics.json fields, given the best history row (the harness adds identity,
        accuracy, timing, GPU and provenance)."""
        raise NotImplementedError

    def averaged(self) -> contextlib.AbstractContextManager[None]:
        """The weights the run evaluates and saves, in place inside the block (TRM: the moving average)."""
        return contextlib.nullcontext()

    @staticmethod
    def load_data(dataset: str) -> Any:
        """The built data set, validated (before anything is written)."""
        raise NotImplementedError

    # ---- the harness
    @classmethod
    def train(cls, params: Params, name: str, seed: int) -> Path:
        """`hrm train` for this study, in this process or as one rank of a torchrun launch (hrm.runtime.launch);
        refuses (exit 2) if another process holds the run folder."""
        exp = params.experiment(name)
        with group(params.runtime.device != "cpu" and torch.cuda.is_available()) as ranks:
            if not ranks.main:              # one log and one progress bar per run: rank 0's
                log.setLevel(logging.WARNING)
            data = cls.load_data(exp.dataset)
            return cls(params, exp, seed, data, ranks=ranks).execute()  # type: ignore[call-arg]

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Rank 0 takes the run lock; every rank refuses if it could not (they agree in a collective)."""
        with contextlib.ExitStack() as held:
            refused: HrmError | None = None
            if self.ranks.main:
                try:
                    held.enter_context(RunLock(paths.run_dir(self.exp.group, self.exp.name, self.seed)))
                except HrmError as exc:
                    refused = exc
            if self.ranks.any(refused is not None):
                raise refused or HrmError(f"{self.label}: rank 0 could not lock the run folder; see its message")
            yield

    def execute(self) -> Path:
        exp, r = self.exp, self.exp.recipe
        with self.locked():
            try:
                return self._execute()
            except torch.cuda.OutOfMemoryError:
                raise HrmError(f"{self.label}: CUDA out of memory with batch size {r.batch_size} (eval "
                               f"{r.eval_batch_size}); lower recipes.{exp.recipe_name}.batch_size (or "
                               f".eval_batch_size) in {self.params.path}, or set runtime.precision: bf16; no "
                               f"outputs were written, earlier checkpoints are kept") from None
            except RuntimeError as exc:
                # A collective fails when a peer died (gloo: connection reset; NCCL: watchdog): one line, no
                # traceback. Nothing was written since the last checkpoint, which the same command resumes.
                if self.ranks.world == 1 or not any(w in str(exc) for w in ("gloo", "NCCL", "onnection")):
                    raise
                raise HrmError(f"{self.label}: rank {self.ranks.rank} of {self.ranks.world}: a collective failed "
                               f"({str(exc).splitlines()[0][:200]}): another rank died or hung; outputs since the "
                               f"last checkpoint are lost, rerun the same command to resume from it") from None

    def _execute(self) -> Path:
        restored = checkpoint.resume(self.ckpt, self.state.params_hash, self.model, self.optimizer)
        if restored is not None:
            self.state, extra = restored
            self.load_extra(extra)
        self.prior_s, self.t_start = self.state.elapsed_s, time.perf_counter()
        self.setup()
        with GpuMonitor(self.device, self.runtime.nvml_interval_s) as monitor, self.stop:
            self.loop()
        self.write_outputs(monitor)
        if self.ranks.main:
            checkpoint.remove(self.ckpt)   # finished: a rerun must retrain, not resume at the end
        return paths.model_file(self.exp.group, self.exp.name, self.seed)

    def elapsed(self) -> float:
        return self.prior_s + time.perf_counter() - self.t_start

    def save(self) -> None:
        """Every rank calls it (gathering per-rank state is a collective); rank 0 writes."""
        self.state.elapsed_s = self.elapsed()
        extra = self.extra_state()
        if self.ranks.main:
            checkpoint.save(self.ckpt, self.state, self.model, self.optimizer, extra)

    def should_stop(self, due: bool) -> bool:
        """Whether to stop after this batch on a SIGTERM/SIGINT. One process: at once. Several: the ranks
        agree at the `due` batches (the same on every rank: a collective), so all save and leave together."""
        if self.ranks.world == 1:
            return self.stop.received is not None
        if not due or not self.ranks.any(self.stop.received is not None):
            return False
        self.stop.received = self.stop.received or signal.SIGTERM    # a rank the signal has not reached yet
        return True

    def stopped(self, where: str) -> Stopped:
        assert self.stop.received is not None
        return Stopped(f"{self.label}: stopped by {signal.Signals(self.stop.received).name} {where}; checkpoint "
                       f"saved to {self.ckpt}; resume with `python -m hrm train {self.exp.name} --seed {self.seed}`",
                       self.stop.received)

    @together
    def write_outputs(self, monitor: GpuMonitor) -> None:
        exp, s, seed = self.exp, self.state, self.seed
        gpu = sum_over_ranks(self.ranks.objects(monitor.facts()))
        if not self.ranks.main:
            return
        best = max(s.history, key=lambda row: row["test_acc"])
        metrics = {
            "experiment": exp.name, "seed": seed, "group": exp.group, "dataset": exp.dataset,
            "model": exp.model_name, "recipe": exp.recipe_name, "mode": exp.mode, "optimizer_steps": s.step,
            "test_acc": s.history[-1]["test_acc"], "best_test_acc": best["test_acc"],
            "train_acc": s.history[-1]["train_acc"], "train_loss": s.history[-1]["train_loss"],
            **self.metrics(best),
            **({"processes": self.ranks.world} if self.ranks.world > 1 else {}),
            "total_seconds": round(self.elapsed(), 3), "resumed_from": s.resumed_from,
            "gpu": gpu, "provenance": provenance.record(exp.params_hash(), gpu["device_name"]),
        }
        g, n = exp.group, exp.name
        write_bytes(paths.model_file(g, n, seed),
                    checkpoint.model_bytes(exp.as_dict(), seed, self.model,
                                           {"params_hash": exp.params_hash(), **self.model_extra()}))
        write_text(paths.history_file(g, n, seed), csv_text(s.history))
        write_text(paths.steps_file(g, n, seed),
                   csv_text([{"step": i + 1, "loss": round(v, 6)} for i, v in enumerate(s.step_losses)]))
        write_json(paths.metrics_file(g, n, seed), metrics)
