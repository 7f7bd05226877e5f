"""Helpers for the fault-injection tests: a tiny deterministic run and ways to compare two runs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from conftest import tiny_params, write_params

from hrm.cli import main
from hrm.core import paths

EXPERIMENT, SEED, GROUP = "digits-tiny", 0, "demo"
BIN = Path(sys.executable).parent
# Metrics that must be identical after a resume (timings and provenance are not).
STABLE_METRICS = ("test_acc", "best_test_acc", "best_epoch", "train_acc", "train_loss", "optimizer_steps",
                  "epochs", "complete", "params")


def setup_run(folder: Path, epochs: int = 6, batch_size: int = 32, log_every: int = 1) -> None:
    """Tiny, deterministic CNN on the digits in `folder` (the cwd), data already built."""
    raw = tiny_params()
    raw["recipes"]["tiny"].update(epochs=epochs, batch_size=batch_size)
    raw["runtime"]["log_every_steps"] = log_every
    write_params(folder, raw)
    assert main(["download", "digits"]) == 0 and main(["build", "digits"]) == 0


PUZZLE_EXPERIMENT = "maze-tiny"


def setup_puzzle_run(folder: Path) -> None:
    """A tiny, deterministic puzzle HRM with ACT (carry scheme) on the demo's generated mazes, 2 updates
    per epoch for 4 epochs, checkpointing every epoch, data already built."""
    raw = tiny_params(**{PUZZLE_EXPERIMENT: {"group": GROUP, "dataset": "maze-demo", "model": "maze-tiny",
                                             "recipe": "maze-tiny", "seeds": [SEED]}})
    raw["models"]["maze-tiny"] = {**raw["models"]["hrm-puzzle-tiny"], "hidden": 32, "heads": 2, "mlp_inner": 64,
                                  "low_layers": 1, "high_layers": 1}
    raw["recipes"]["maze-tiny"] = {**raw["recipes"]["maze-demo"], "epochs": 4, "eval_interval": 1,
                                   "batch_size": 500, "eval_halt_steps": [1]}
    raw["runtime"]["log_every_steps"] = 1
    write_params(folder, raw)
    assert main(["download", "maze-demo"]) == 0 and main(["build", "maze-demo"]) == 0


def outcome(experiment: str = EXPERIMENT) -> dict[str, Any]:
    """Everything a finished run produced that must not depend on interruptions."""
    import json

    model = torch.load(paths.model_file(GROUP, experiment, SEED), map_location="cpu", weights_only=True)
    metrics = json.loads(paths.metrics_file(GROUP, experiment, SEED).read_text())
    history = [{k: v for k, v in row.items() if k not in ("seconds", "eval_seconds")}
               for row in csv.DictReader(open(paths.history_file(GROUP, experiment, SEED)))]
    return {"weights": model["state_dict"], "metrics": {k: metrics[k] for k in STABLE_METRICS if k in metrics},
            "history": history, "steps": paths.steps_file(GROUP, experiment, SEED).read_text()}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    weights = a["weights"].keys() == b["weights"].keys() and all(
        torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    return weights and all(a[k] == b[k] for k in ("metrics", "history", "steps"))


def clear_outputs(experiment: str = EXPERIMENT) -> None:
    for f in paths.run_dir(GROUP, experiment, SEED).glob("*"):
        if f.is_file():
            f.unlink()


def train_cmd(experiment: str = EXPERIMENT) -> list[str]:
    return [sys.executable, "-m", "hrm", "train", experiment, "--seed", str(SEED)]


class Training:
    """`python -m hrm train` in a subprocess; `started` is set once the first batch has run
    (a progress line: "batches" for the image trainer, "batch " for the puzzle trainer)."""

    def __init__(self, cwd: Path, experiment: str = EXPERIMENT) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(train_cmd(experiment), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.started = threading.Event()
        self.started_at = self.last_batch_at = 0.0
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.spawned = time.monotonic()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "batches" in line or " batch " in line:
                self.last_batch_at = time.monotonic()
                if not self.started.is_set():
                    self.started_at = self.last_batch_at
                    self.started.set()

    def finish(self, timeout: float = 120) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return rc
