"""`hrm bench gpu-check` (`make gpu-check`): the first thing to run on a GPU machine.

1. A tiny model of every kind trains a few steps on the CPU in fp32 with every speed option off:
   the reference. 2. The same steps run on CUDA with each speed option switched on alone (and in
   fp32 with all off); every loss must match the reference within the tolerance of its precision.
3. NVML must report memory, utilisation and energy. 4. Then the measurements of the speed issue:
   `bench train` of the image study's models and of the 27M puzzle HRM at the Sudoku and ARC shapes,
   and `bench memory`, saved under results/bench/. Exit 0 only if every comparison agrees.
Needs only the package and MNIST (data/built/mnist, $HRM_DATA_DIR/mnist or ../shared/data/mnist).
On a machine without CUDA it refuses; the tests run steps 1-2 with the CPU as both sides.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from hrm.core import paths
from hrm.core.atomic import write_json
from hrm.core.errors import DataError, HrmError
from hrm.core.gpu import GpuMonitor, synchronize
from hrm.data import build as built
from hrm.data.formats import read_mnist
from hrm.models.registry import MODELS as REGISTRY
from hrm.pipeline import studies
from hrm.pipeline.config import parse_params

STEPS = 4
TOL = {"fp32": 5e-3, "bf16": 5e-2}      # relative, per loss; fp32 leaves room for TF32 convolutions
OFF = {"device": "cpu", "precision": "fp32", "attention": "auto", "optimizer": "foreach", "compile": False,
       "compile_mode": "default", "data_on_device": False}
# Each speed option alone (name -> runtime keys changed from OFF); which exist on the CPU is marked.
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {}, "bf16": {"precision": "bf16"}, "bf16-pure": {"precision": "bf16-pure"},
    "flash": {"precision": "bf16", "attention": "flash"}, "efficient": {"attention": "efficient"},
    "math": {"attention": "math"}, "fused": {"optimizer": "fused"}, "loop": {"optimizer": "loop"},
    "compile": {"compile": True}, "cuda-graphs": {"compile": True, "compile_mode": "reduce-overhead"},
    "data-on-device": {"data_on_device": True},
}
CPU_VARIANTS = ("fp32", "flash", "math", "fused", "loop", "compile", "data-on-device")


def tiny_models() -> dict[str, dict[str, Any]]:
    """A tiny version of every model kind (each kind's row in the model registry holds its own)."""
    return {kind: {"kind": kind, **entry.tiny} for kind, entry in REGISTRY.items()}


IMAGE_RECIPE = {"epochs": 1, "batch_size": 64, "eval_batch_size": 64, "lr": 1e-3, "weight_decay": 1e-4,
                "betas": [0.9, 0.999], "eps": 1e-8, "grad_clip": 1.0, "warmup_epochs": 0, "lr_floor": 0.0,
                "label_smoothing": 0.0, "train_acc": "pre_update"}
PUZZLE_RECIPE = {"kind": "puzzle", "epochs": 10, "batch_size": 32, "eval_batch_size": 32, "eval_interval": 10,
                 "lr": 1e-3, "puzzle_emb_lr": 1e-2, "weight_decay": 0.1, "puzzle_emb_weight_decay": 0.1,
                 "betas": [0.9, 0.95], "warmup_steps": 0, "scheme": "carry", "eval_halt_steps": [4], "max_steps": 0}
PUZZLE_SET = "sudoku-extreme-1k"      # its shape only: the puzzle data are random tokens


def check_params(base: dict[str, Any], runtime: dict[str, Any]) -> Any:
    """The params file with the tiny experiments (check-<kind>) and the given runtime keys."""
    raw = copy.deepcopy(base)
    raw["runtime"] |= runtime
    raw["recipes"] |= {"check-image": IMAGE_RECIPE, "check-puzzle": PUZZLE_RECIPE}
    raw["models"] |= {f"check-{k}": v for k, v in tiny_models().items()}
    raw["experiments"] = {f"check-{k}": {
        "group": "demo", "model": f"check-{k}", "seeds": [0],
        **({"dataset": "mnist", "recipe": "check-image", "mode": "faithful"} if REGISTRY[k].study == "image"
           else {"dataset": PUZZLE_SET, "recipe": "check-puzzle"})} for k in REGISTRY}
    return parse_params(raw, Path("<gpu-check>"))


def mnist(limit: int = 1024) -> built.ImageData:
    """MNIST from the built set, else from the raw files in $HRM_DATA_DIR/mnist or ../shared/data/mnist."""
    if (paths.built_dir("mnist") / "meta.json").exists():
        return built.load("mnist")
    for root in (os.environ.get("HRM_DATA_DIR"), "../shared/data"):
        if root and (Path(root) / "mnist").is_dir():
            s, spec = read_mnist(Path(root) / "mnist"), studies.ALL_DATASETS["mnist"]
            mean, std = built.statistics(s.train_x, spec.norm, spec.pixel_max)
            return built.ImageData(train_x=s.train_x[:limit], train_y=s.train_y[:limit], test_x=s.test_x[:256],
                                   test_y=s.test_y[:256], label_names=s.label_names, mean=mean, std=std,
                                   pixel_max=spec.pixel_max)
    raise DataError("gpu-check: MNIST not found in data/built/mnist, $HRM_DATA_DIR/mnist or ../shared/data/mnist")


def losses(params: Any, kind: str, data: Any, steps: int = STEPS) -> list[float]:
    """The training losses of `steps` batches of the tiny `kind` model under `params.runtime`."""
    from hrm.runtime.speed import attention
    from hrm.train.fingerprint import make_run

    exp = params.experiment(f"check-{kind}")
    run = make_run(params, exp, 0, data)
    feed = run.batches()
    out = []
    with attention(params.runtime.attention):
        for _ in range(steps):
            out.append(run.train_batch(next(feed))[0])    # image: (loss, hits); puzzle: the loss row
    synchronize(run.device)
    return [float(v) for v in out]


def agree(reference: list[float], got: list[float], tol: float) -> bool:
    return len(reference) == len(got) and all(
        math.isfinite(g) and abs(g - r) <= tol * max(abs(r), 1e-3) for r, g in zip(reference, got))


def compare(base: dict[str, Any], device: str, variants: tuple[str, ...], kinds: tuple[str, ...] | None = None,
            overrides: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per (kind, variant): the reference losses (CPU, fp32, all off), the variant's, and whether
    they agree. `overrides` adds named variants (the tests use it to show a wrong step is caught)."""
    from hrm.data.puzzles.stream import synthetic as synthetic_puzzles

    table = VARIANTS | (overrides or {})
    kinds = tuple(REGISTRY) if kinds is None else kinds
    data = {"image": mnist(), "puzzle": synthetic_puzzles(PUZZLE_SET, 256)}
    rows = []
    for kind in kinds:
        d = data[REGISTRY[kind].study]
        reference = losses(check_params(base, OFF), kind, d)
        for name in variants:
            change = table[name]
            runtime = OFF | {"device": device} | {k: v for k, v in change.items() if k != "recipe"}
            params = check_params(base, runtime)
            if "recipe" in change:     # a deliberately different computation (tests only)
                params = variant(params, f"check-{kind}", recipe=change["recipe"])
            error = None
            try:
                got = losses(params, kind, d)
            except Exception as exc:   # a broken option is a disagreement to report, not the end of the check
                got, error = [], f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            tol = TOL["bf16" if runtime["precision"] != "fp32" and device == "cuda" else "fp32"]
            rows.append({"kind": kind, "variant": name, "device": device, "tolerance": tol, "reference": reference,
                         "losses": got, "agree": error is None and agree(reference, got, tol), "error": error})
    return rows


def variant(params: Any, name: str, model: dict[str, Any] | None = None, recipe: dict[str, Any] | None = None) -> Any:
    """`params` with experiment `name`'s model and recipe keys changed (an ablation or a deliberate error)."""
    exp = params.experiments[name]
    exp = dataclasses.replace(exp, model=dataclasses.replace(exp.model, **(model or {})),
                              recipe=dataclasses.replace(exp.recipe, **(recipe or {})))
    return dataclasses.replace(params, experiments=params.experiments | {name: exp})


def nvml_check() -> dict[str, Any]:
    """A few seconds of matmuls under the monitor; every NVML field must come back."""
    device = torch.device("cuda")
    with GpuMonitor(device, 0.05) as mon:
        a = torch.randn(4096, 4096, device=device)
        for _ in range(200):
            a = torch.tanh(a @ a)
        synchronize(device)
    facts = mon.facts()
    fields = ("device_name", "nvml_peak_memory_used_mib", "nvml_mean_utilization_pct", "energy_joules")
    return {"facts": facts, "agree": all(facts[f] is not None for f in fields)}


# (experiment, batch): the ARC recipe's 768 is the global batch of the authors' 8 GPUs; one GPU takes 96.
BENCH = (("mnist-hrm", None), ("cifar10-hrm", None), ("cifar10-cnn", None), ("sudoku-extreme-1k-hrm", None),
         ("arc1-hrm", 96))


def gpu_check(params_path: Path, steps: int = 20) -> int:
    if not torch.cuda.is_available():
        raise HrmError(f"gpu-check needs a CUDA device; torch {torch.__version__} sees none here "
                       f"(CUDA build: {torch.version.cuda}). Run it on a GPU machine.")
    from hrm.bench.memory import bench_memory
    from hrm.bench.train import bench_train
    from hrm.pipeline.config import load_params

    base = yaml.safe_load(params_path.read_text())
    seconds: dict[str, float] = {}          # per phase: is the whole check inside its 8-minute budget?
    start = time.perf_counter()
    rows = compare(base, "cuda", tuple(VARIANTS))
    seconds["compare"] = time.perf_counter() - start
    for r in rows:
        print(f"{'ok  ' if r['agree'] else 'FAIL'} {r['kind']:<19} {r['variant']:<15} "
              f"ref {np.round(r['reference'], 5).tolist()} got {np.round(r['losses'], 5).tolist()}"
              + (f" ({r['error']})" if r["error"] else ""), flush=True)
    nvml = nvml_check()
    print(("ok  " if nvml["agree"] else "FAIL") + " nvml " + json.dumps(nvml["facts"]), flush=True)
    ok = all(r["agree"] for r in rows) and nvml["agree"]
    params = load_params(params_path)
    for name, batch in BENCH:
        t0 = time.perf_counter()
        result = bench_train(params, name, steps=steps, save=True, batch=batch)
        seconds[f"bench train {name}"] = time.perf_counter() - t0
        print(json.dumps({k: result[k] for k in ("experiment", "seconds_per_epoch", "tokens_per_second", "mfu")}),
              flush=True)
    for name in ("mnist-hrm", "sudoku-extreme-1k-hrm"):
        t0 = time.perf_counter()
        bench_memory(params, name, batch=128, save=True)   # BPTT at depth 32 and batch 768 would not fit
        seconds[f"bench memory {name}"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    write_json(paths.bench_file("gpu-check"), {"comparisons": rows, "nvml": nvml, "seconds": seconds, "ok": ok})
    print(f"gpu-check: {'all agree' if ok else 'DISAGREEMENT (see above)'}; {seconds['total']:.0f} s")
    return 0 if ok else 1
