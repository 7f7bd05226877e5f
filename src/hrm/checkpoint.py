"""Epoch-end checkpoints: everything a killed run needs to continue exactly where it stopped."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hrm.atomic import atomic_path

log = logging.getLogger("hrm")


@dataclass
class RunState:
    """Progress of one run; saved with the model and optimizer at every epoch end."""

    params_hash: str
    epoch: int = 0                                             # epochs completed
    step: int = 0                                              # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)   # one row per epoch
    step_losses: list[float] = field(default_factory=list)     # one per optimizer step
    elapsed_s: float = 0.0                                     # wall time spent in earlier processes
    resumed_from: list[int] = field(default_factory=list)      # epochs at which the run was resumed


def save(path: Path, state: RunState, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    payload = {"state": asdict(state), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "torch_rng": torch.get_rng_state()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def resume(path: Path, params_hash: str, model: torch.nn.Module,
           optimizer: torch.optim.Optimizer) -> RunState | None:
    """Restore model and optimizer from `path` if it belongs to this configuration."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        state = RunState(**payload["state"])
    except Exception as exc:  # unreadable or foreign file: start over rather than crash
        log.warning("%s: unreadable checkpoint (%s); starting from scratch", path, exc)
        return None
    if state.params_hash != params_hash:
        log.warning("%s: written for params hash %s, current is %s; starting from scratch",
                    path, state.params_hash, params_hash)
        return None
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["torch_rng"])
    state.resumed_from.append(state.epoch)
    log.info("%s: resuming after epoch %d (step %d)", path, state.epoch, state.step)
    return state
