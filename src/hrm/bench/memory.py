"""`hrm bench memory EXPERIMENT`: training memory of one HRM segment against its depth N*T.

The one-step gradient's promise (REFERENCE II.2) is memory that does not grow with the number of
recurrent steps; full backpropagation through time (`gradient: bptt`, the ablation) grows linearly.
For each N*T (N fixed at the experiment's high_cycles, T = depth / N) and each gradient rule, one
segment runs forward and backward on a batch of random inputs, and two measures are taken:

* `saved_bytes`: the bytes autograd keeps for the backward pass (distinct storages saved by the
  forward, parameters excluded), counted through saved-tensor hooks: exact, and the same on any
  device, so the CPU can check the promise;
* `cuda_peak_bytes`: on CUDA, the allocator's peak above the memory held before the forward.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from hrm.core import paths, provenance
from hrm.core.atomic import write_json
from hrm.core.errors import ConfigError
from hrm.core.gpu import resolve_device
from hrm.models.registry import HRMCore, Shape, build_model
from hrm.pipeline import studies
from hrm.pipeline.config import Params
from hrm.runtime.speed import apply_precision, attention

DEPTHS = (4, 8, 16, 32)
RULES = ("one-step", "bptt")


def saved_bytes(fn: Any, exclude: set[int]) -> tuple[Any, int]:
    """Run `fn()`; return its result and the bytes of distinct storages autograd saved meanwhile."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in exclude:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def segment_inputs(model: torch.nn.Module, shape: Shape, batch: int, device: torch.device) -> tuple[Any, ...]:
    """Random inputs for one training segment, after the model's initial carry."""
    g = torch.Generator().manual_seed(0)
    if shape.image_shape is not None:
        return model.initial_carry(batch), torch.randn(batch, *shape.image_shape, generator=g).to(device)
    tokens = torch.randint(1, shape.classes, (batch, shape.seq_len), generator=g).to(device)
    return model.initial_carry(batch, shape.seq_len), tokens, torch.zeros(batch, dtype=torch.long, device=device)


def measure(params: Params, name: str, depth: int, rule: str, batch: int) -> dict[str, Any]:
    exp = params.experiment(name)
    if not isinstance(exp.model, HRMCore):
        raise ConfigError(f"bench memory: experiments.{name} uses a {exp.model.kind} model; it needs an HRM")
    n = exp.model.high_cycles
    if depth % n:
        raise ConfigError(f"bench memory: depth {depth} is not a multiple of N = high_cycles = {n}")
    cfg = dataclasses.replace(exp.model, low_steps=depth // n, gradient=rule)
    device = resolve_device(params.runtime.device)
    shape = studies.shape(exp.dataset)
    model = build_model(cfg, shape)
    model.init_weights(torch.Generator().manual_seed(0))
    model.to(device).train()
    amp = apply_precision(model, device, params.runtime.precision)
    inputs = segment_inputs(model, shape, batch, device)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()} | {
        b.untyped_storage().data_ptr() for b in model.buffers()}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with attention(params.runtime.attention), amp:
        out, saved = saved_bytes(lambda: model.segment(*inputs), weights)
        out.logits.float().square().mean().backward()
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
    return {"depth": depth, "N": n, "T": depth // n, "gradient": rule, "batch": batch, "saved_bytes": saved,
            "cuda_peak_bytes": peak}


def bench_memory(params: Params, name: str, depths: tuple[int, ...] = DEPTHS, batch: int | None = None,
                 save: bool = False) -> dict[str, Any]:
    exp = params.experiment(name)
    batch = batch or exp.recipe.batch_size
    rows = [measure(params, name, d, rule, batch) for rule in RULES for d in depths]
    device = resolve_device(params.runtime.device)
    name_ = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    result = {"experiment": name, "batch": batch, "precision": params.runtime.precision, "rows": rows,
              "device": name_ or "cpu", "provenance": provenance.record(exp.params_hash(), name_)}
    if save:
        stem = f"memory-{name}-{'cuda' if name_ else 'cpu'}"
        write_json(paths.bench_file(stem), result)
        draw(result, paths.bench_file(stem, "png"))
    return result


def draw(result: dict[str, Any], path: Path) -> None:
    from hrm.evaluate.figures import plt, save

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    key = "cuda_peak_bytes" if result["rows"][0]["cuda_peak_bytes"] is not None else "saved_bytes"
    for rule, style in zip(RULES, ("o-", "s--")):
        rows = [r for r in result["rows"] if r["gradient"] == rule]
        ax.plot([r["depth"] for r in rows], [r[key] / 2**20 for r in rows], style, label=rule)
    ax.set_xticks([r["depth"] for r in result["rows"] if r["gradient"] == RULES[0]])   # linear: BPTT is a line
    ax.set_ylim(bottom=0)
    ax.set_xlabel("recurrent steps per segment (N*T)")
    ax.set_ylabel("MiB " + ("(CUDA peak above the weights)" if key == "cuda_peak_bytes" else "saved for backward"))
    ax.set_title(f"{result['experiment']}, batch {result['batch']}, {result['device']}", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, path)
