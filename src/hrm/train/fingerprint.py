"""`hrm fingerprint EXPERIMENT --seed S`: what a run's computation gives on a fixed probe, as a small
canonical JSON file beside the run (`fingerprint.json`).

A train stage depends on this file instead of on the source files: an edit that leaves the file
byte-identical (a refactor, a log line, progress bars) keeps every committed run up to date, on any
clone and without its model.pt; an edit that changes what training computes changes the file and
plans the training again. The probe is the trainer's own code on the run's own data, params and seed,
and covers, section by section:

* `run`, `schedule`: the run's length and the learning rate(s) the trainer would set at the first
  16 updates and at SCHEDULE_POINTS evenly spaced ones up to the last (schedule, warmup, epochs);
* `data`: the first batches' example indices and bytes and the first batch of the last epoch
  (data order, augmentation, the data set itself);
* `init`: per-tensor sums of the initial weights and buffers (initialisation, architecture);
* `steps`: PROBE_BATCHES real training steps on the first PROBE_ROWS rows of each batch, with the
  loss terms, accuracy and, for ACT, the halting state (model, loss, optimizer, halting, carry);
* `weights`, `test`: the weights after those steps as the run evaluates them (EMA included) and the
  training loop's test pass on the first PROBE_TESTS test examples.

It always runs on the CPU in float32 with one thread and deterministic kernels, whatever the
runtime section says, so the file is the same on every machine of one CPU kind. CUDA-only paths
(bf16, torch.compile, fused kernels) are not in it: `make gpu-check` holds them to this path.
Floats keep DIGITS significant digits. A computation change that the probe misses is one that first
acts after PROBE_BATCHES steps other than through the schedule or the data order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import math
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm.core import paths
from hrm.core.atomic import write_text
from hrm.pipeline.config import Experiment, Params
from hrm.train.run import Run

PROBE_BATCHES = 4       # training steps replayed, in the run's own batch order
PROBE_ROWS = 8          # rows of each of those batches that are trained on (the first ones)
PROBE_TESTS = 16        # test examples scored after the steps
SCHEDULE_POINTS = 33    # evenly spaced updates (first and last included) whose rates are recorded
DIGITS = 6              # significant digits kept of every float
VERSION = 1             # of the probe: a new version changes every file (then `hrm relock` each run)


def canonical(params: Params) -> Params:
    """The params with the runtime the probe always uses: CPU, float32, one thread, deterministic."""
    runtime = dataclasses.replace(params.runtime, device="cpu", precision="fp32", deterministic=True, num_threads=1,
                                  compile=False, optimizer="foreach", data_on_device=False, processes=1)
    return dataclasses.replace(params, runtime=runtime)


def make_run(params: Params, exp: Experiment, seed: int, data: Any = None) -> Run:
    """The study's training run as `hrm train` builds it (without its lock or files), set up at its start."""
    module = importlib.import_module(exp.study.modules["train"])
    data = module.RUN.load_data(exp.dataset) if data is None else data
    run = module.RUN(params, exp, seed, data)
    run.setup()
    return run


def rounded(x: float) -> float | None:
    """`x` to DIGITS significant digits (None for NaN: no halted row, say); -0.0 is 0.0."""
    x = float(x)
    return None if math.isnan(x) else float(f"{x:.{DIGITS}g}") + 0.0


def digest(t: torch.Tensor) -> list[float | None]:
    """[sum, sum of squares] in float64: moves with any element, and says by how much."""
    t = t.detach().double()
    return [rounded(t.sum().item()), rounded(t.square().sum().item())]


def sha(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = a.cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str(a.dtype).encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def weights(run: Run) -> dict[str, list[float | None]]:
    return {name: digest(t) for name, t in run.model.state_dict().items() if t.is_floating_point()}


def schedule_steps(total: int) -> list[int]:
    """The first 16 updates and SCHEDULE_POINTS evenly spaced ones up to the last."""
    last = max(total - 1, 0)
    spaced = {round(last * i / (SCHEDULE_POINTS - 1)) for i in range(SCHEDULE_POINTS)}
    return sorted(set(range(min(16, total))) | spaced)


def schedule(run: Run, total: int) -> dict[str, list[Any]]:
    """The rates the trainer sets at `schedule_steps(total)`: {"update": [...], "lr": [...], ...}."""
    steps = schedule_steps(total)
    rates = [run.learning_rates(s) for s in steps]
    return {"update": steps, **{k: [rounded(r[k]) for r in rates] for k in rates[0]}}


def run_updates(run: Run) -> int:
    """The updates the schedule spans: the image schedule's size (in batches in faithful mode), or the puzzle
    run's batches, capped by its budget of updates."""
    plan = run.plan()
    if "schedule_steps" in plan:
        return plan["schedule_steps"]
    return min(plan["max_steps"], plan["batches"]) if plan["max_steps"] else plan["batches"]


def batch_inputs(run: Run, idx: Any) -> list[Any]:
    """What the trainer reads for these example indices: images and labels, or puzzle inputs and labels."""
    if hasattr(run, "x_train"):
        return [run.x_train[idx], run.y_train[idx]]
    rows = np.sort(idx)          # memory-mapped reads in file order
    return [np.asarray(run.data.train.inputs[rows]), np.asarray(run.data.train.labels[rows])]


def step_record(run: Run, out: Any) -> dict[str, Any]:
    """One probe step: its loss terms and accuracy, and the ACT halting state after it."""
    if isinstance(out, tuple):                       # image: (mean loss, correct predictions)
        loss, hits = out
        return {"loss": rounded(loss.item()), "correct": rounded(hits.item()), "updates": run.state.step}
    loss, lm, q_halt, q_continue, acc = out.tolist()    # puzzle: the trainer's loss row
    act = run.act
    return {"loss": rounded(loss), "lm": rounded(lm), "q_halt": rounded(q_halt), "q_continue": rounded(q_continue),
            "halted_exact_acc": rounded(acc), "updates": run.state.step,
            "halted": int(act.halted.sum()) if act is not None else None,
            "act_steps": int(act.steps.sum()) if act is not None else None}


def scored(got: dict[str, Any]) -> dict[str, Any]:
    """The test pass as JSON: integer tensors as lists, float tensors as digests, numbers rounded."""
    out: dict[str, Any] = {}
    for key, value in got.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.tolist() if not value.is_floating_point() else digest(value)
        else:
            out[key] = rounded(value)
    return out


@contextlib.contextmanager
def torch_settings() -> Iterator[None]:
    """Restore torch's process-wide thread count and determinism after the probe has pinned them."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=True)


def probe(params: Params, name: str, seed: int, data: Any = None) -> dict[str, Any]:
    """The fingerprint of run (`name`, `seed`) as a JSON-ready dict (see the module docstring)."""
    with torch_settings():
        return _probe(canonical(params), name, seed, data)


def _probe(params: Params, name: str, seed: int, data: Any) -> dict[str, Any]:
    exp = params.experiment(name)
    run = make_run(params, exp, seed, data)
    total = run_updates(run)
    feed: Iterator[Any] = run.batches()
    full = list(islice(feed, PROBE_BATCHES))
    later = next(run.batches(exp.recipe.epochs)) if exp.recipe.epochs > 1 else full[0]
    record: dict[str, Any] = {
        "probe": {"version": VERSION, "batches": PROBE_BATCHES, "rows": PROBE_ROWS, "test_examples": PROBE_TESTS,
                  "digits": DIGITS, "device": "cpu", "dtype": "float32", "threads": 1},
        "experiment": name, "seed": seed, "params_hash": exp.params_hash(),
        "run": {**run.plan(), "updates": total},
        "schedule": schedule(run, total),
        "data": {"first_batches": sha(*full), "last_epoch_batch": sha(later),
                 "probe_inputs": sha(*(a for idx in full for a in batch_inputs(run, idx[:PROBE_ROWS])))},
        "init": weights(run),
    }
    record["steps"] = [step_record(run, run.train_batch(idx[:PROBE_ROWS])) for idx in full]
    with run.averaged():
        record["weights"] = weights(run)
    record["test"] = scored(run.probe_test(PROBE_TESTS))
    return record


def text(record: dict[str, Any]) -> str:
    """The canonical file: sorted keys, a field per line (a list of numbers on one), so a diff reads by field."""
    body = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
    flat = re.sub(r"\[\s+([^][{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", body)
    return flat + "\n"


def write(path: Path, record: dict[str, Any]) -> None:
    write_text(path, text(record))


def fingerprint(params: Params, name: str, seed: int) -> None:
    """`hrm fingerprint`: probe the run and write its fingerprint file (atomically)."""
    exp = params.experiment(name)
    write(paths.fingerprint_file(exp.group, name, seed), probe(params, name, seed))
