"""A trained run's model, loaded once for every reader (`hrm evaluate` of both studies, `hrm analyze`).

The weights come from the run's model.pt, refused if they were trained under other params; the
numerics are the ones model.pt records (an imported checkpoint's, e.g. the authors' bf16-pure), else
runtime.precision, applied in one call (hrm.runtime.speed.apply_precision).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from hrm.core import checkpoint, paths
from hrm.models.registry import Shape, build_model
from hrm.pipeline.config import Experiment, Params
from hrm.runtime.speed import apply_precision


@dataclass
class Loaded:
    model: torch.nn.Module
    precision: str
    amp: torch.autocast                                       # the context its forward passes run under
    payload: dict[str, Any] = field(default_factory=dict)     # model.pt as saved (empty: fresh weights)


def load_run(params: Params, exp: Experiment, seed: int, shape: Shape, device: torch.device,
             trained: bool = True) -> Loaded:
    """The run's model on `device` (`trained=False`: initialised as its training starts, for baselines)."""
    model = build_model(exp.model, shape)
    payload: dict[str, Any] = {}
    if trained:
        path, retrain = paths.model_file(exp.group, exp.name, seed), f"hrm train {exp.name} --seed {seed}"
        payload = checkpoint.read_model_file(path, retrain)
        checkpoint.load_model_file(path, model, retrain, payload, exp.params_hash())
    else:
        model.init_weights(torch.Generator().manual_seed(seed))
    precision = str(payload.get("precision") or params.runtime.precision)
    amp = apply_precision(model, device, precision)
    return Loaded(model.to(device), precision, amp, payload)
