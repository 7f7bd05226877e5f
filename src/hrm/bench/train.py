"""`hrm bench train EXPERIMENT`: time N warm steps of an experiment's real training step
(and `hrm bench replay`: the same steps from scratch, checked against a finished run's losses).

The step is the trainer's own (`ImageRun.train_batch`, `PuzzleRun.train_batch`), with the model,
optimizer, precision and speed options a run would use; nothing is written. Data: the built data
set when it is there, otherwise random data of the same shape (e.g. CIFAR before its download),
which is what the timing needs. One JSON object comes out; the FLOPs come from `hrm.bench.flops`.
"""

from __future__ import annotations

import dataclasses
import importlib
import resource
import time
from typing import Any

import torch

from hrm.bench import flops
from hrm.core import paths, provenance
from hrm.core.atomic import write_json
from hrm.core.errors import DataError
from hrm.core.gpu import GpuMonitor, synchronize
from hrm.pipeline.config import Experiment, Params
from hrm.runtime.speed import attention
from hrm.train.fingerprint import make_run

# Dense bf16 matmul peaks, TFLOP/s, by a substring of the device name. H100/H200: REFERENCE IV
# (~800, measured ~790 on this workplace's machines, below the 989 of the datasheet); A100: datasheet.
PEAK_TFLOPS = {"H200": 800.0, "H100": 800.0, "A100": 312.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def load_data(exp: Experiment, synthetic: bool) -> tuple[Any, bool]:
    """The built data set if it is there (and not `synthetic`), else random data of its shape; and which."""
    real = not synthetic and paths.built_dir(exp.dataset).is_dir()   # a broken set there fails with its message
    run = importlib.import_module(exp.study.modules["train"]).RUN      # the study's trainer: its data too
    return (run.load_data(exp.dataset) if real else run.synthetic_data(exp.dataset, 4 * exp.recipe.batch_size)), real


def bench_train(params: Params, name: str, steps: int = 20, warmup: int = 3, synthetic: bool = False,
                save: bool = False, batch: int | None = None) -> dict:
    """The measurements as one JSON-ready dict; `save` also writes results/bench/train-NAME-{cpu,cuda}.json.
    `batch` replaces the recipe's (e.g. one GPU's share of a multi-GPU recipe)."""
    exp = params.experiment(name)
    stem = f"train-{name}" + ("" if batch is None else f"-batch{batch}")
    if batch is not None:
        exp = dataclasses.replace(exp, recipe=dataclasses.replace(exp.recipe, batch_size=batch))
    seed = exp.seeds[0]
    data, real = load_data(exp, synthetic)
    run = make_run(params, exp, seed, data)
    device, runtime, batch = run.device, params.runtime, exp.recipe.batch_size
    feed = run.batches()
    with attention(runtime.attention):
        first = None
        for i in range(warmup):                  # compilation, autotuning, allocator warm-up
            t0 = time.perf_counter()
            run.train_batch(next(feed))
            if i == 0:
                synchronize(device)
                first = time.perf_counter() - t0    # the first step: compilation's cost (target < 60 s)
        synchronize(device)
        with GpuMonitor(device, runtime.nvml_interval_s) as monitor:
            start = time.perf_counter()
            for _ in range(steps):
                run.train_batch(next(feed))
            synchronize(device)
            seconds = (time.perf_counter() - start) / steps
    gpu = monitor.facts()
    shape = run.shape
    step_flops = flops.train_step(exp.model, shape, batch, getattr(getattr(run, "ctx", None), "post_update_acc", False))
    per_epoch = run.steps_per_epoch if hasattr(run, "steps_per_epoch") else (run.batches_per_epoch if real else None)
    peak = peak_tflops(device)
    tflops = step_flops / seconds / 1e12
    energy = gpu["energy_joules"]
    tokens = batch * ((shape.seq_len + 1) if shape.seq_len else getattr(run.model, "seq_len", 1))
    result = {
        "experiment": name, "model": exp.model_name, "mode": exp.mode, "batch_size": batch,
        "data": "built" if real else "synthetic (random, same shape)",
        "step": "one training batch" + (f" ({exp.model.train_segments} optimizer updates)"
                                        if hasattr(exp.model, "train_segments") else " (one optimizer update)"),
        "steps": steps, "warmup_steps": warmup, "first_step_seconds": first,
        "seconds_per_step": seconds, "samples_per_second": batch / seconds, "tokens_per_second": tokens / seconds,
        "steps_per_epoch": per_epoch, "seconds_per_epoch": per_epoch * seconds if per_epoch else None,
        "flops_per_step": step_flops, "tflops": tflops, "peak_tflops": peak, "mfu": tflops / peak if peak else None,
        "peak_memory_bytes": {
            "torch_allocated": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
            "nvml_used": gpu["nvml_peak_memory_used_mib"] * 2**20 if gpu["nvml_peak_memory_used_mib"] else None,
            "process_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024},
        "energy_joules_per_epoch": energy / steps * per_epoch if energy is not None and per_epoch else None,
        "device": gpu["device_name"] or f"cpu ({torch.get_num_threads()} threads)",
        "runtime": {k: getattr(runtime, k) for k in ("precision", "attention", "optimizer", "compile", "compile_mode",
                                                      "data_on_device")},
        "provenance": provenance.record(exp.params_hash(), gpu["device_name"]),
    }
    if save:
        write_json(paths.bench_file(f"{stem}-{device.type}"), result)
    return result


def replay(params: Params, name: str, seed: int, steps: int, data: Any = None) -> dict:
    """Retrain the first `steps` batches of a finished run with the code and params here and compare
    their losses with its steps.csv (6 decimals, as written): whether a change altered training, i.e.
    whether `hrm relock` may keep the run or it must be retrained. `data`: the built set, if loaded."""
    import csv

    exp = params.experiment(name)
    path = paths.steps_file(exp.group, name, seed)
    try:
        with open(path, newline="") as fh:
            committed = [float(r["loss"]) for r in csv.DictReader(fh)][:steps]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc}); train the run first") from None
    run = make_run(params, exp, seed, data if data is not None else load_data(exp, synthetic=False)[0])
    feed = run.batches()
    with attention(params.runtime.attention):
        got = [round(float(run.train_batch(next(feed))[0]), 6) for _ in committed]
    diff = max((abs(a - b) for a, b in zip(got, committed)), default=0.0)
    return {"experiment": name, "seed": seed, "batches": len(got), "max_abs_difference": diff,
            "same": diff == 0.0, "replayed": got, "committed": committed}
