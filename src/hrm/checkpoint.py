"""Checkpoints: everything a killed run needs to continue exactly where it stopped.

A checkpoint is written at every epoch end and when a run is asked to stop (SIGTERM/SIGINT), then
also mid-epoch. File layout: one line with the sha256 of the payload, then the torch payload. The
previous checkpoint is kept as `checkpoint.prev.pt`; a corrupted latest one is detected by its
checksum and the previous one is used instead, with a warning.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hrm.atomic import atomic_path

log = logging.getLogger("hrm")


@dataclass
class RunState:
    """Progress of one run; saved with the model and optimizer."""

    params_hash: str
    epoch: int = 0                                             # epochs completed
    step: int = 0                                              # optimizer updates taken
    history: list[dict[str, Any]] = field(default_factory=list)   # one row per epoch
    step_losses: list[float] = field(default_factory=list)     # one per batch
    elapsed_s: float = 0.0                                     # wall time spent in earlier processes
    resumed_from: list[list[int]] = field(default_factory=list)   # (epoch, batch) of each resume
    # Position inside an epoch that was interrupted (0 = at an epoch boundary).
    batch: int = 0
    partial_losses: list[float] = field(default_factory=list)
    partial_correct: float = 0.0
    partial_seconds: float = 0.0


def previous(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def save(path: Path, state: RunState, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write atomically, keeping the last good checkpoint as checkpoint.prev.pt."""
    buffer = io.BytesIO()
    torch.save({"state": asdict(state), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state()}, buffer)
    payload = buffer.getvalue()
    if path.exists():
        os.replace(path, previous(path))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(hashlib.sha256(payload).hexdigest().encode() + b"\n")
        fh.write(payload)


def read(path: Path) -> dict[str, Any]:
    """Load a checkpoint file, verifying its checksum; raises ValueError when it is damaged."""
    blob = path.read_bytes()
    digest, sep, payload = blob.partition(b"\n")
    if not sep or hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError("checksum mismatch (truncated or corrupted file)")
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    previous(path).unlink(missing_ok=True)


def resume(path: Path, params_hash: str, model: torch.nn.Module,
           optimizer: torch.optim.Optimizer) -> RunState | None:
    """Restore model and optimizer from the newest valid checkpoint of this configuration."""
    for candidate in (path, previous(path)):
        if not candidate.exists():
            continue
        try:
            payload = read(candidate)
            state = RunState(**payload["state"])
        except Exception as exc:  # damaged or foreign file: fall back to the previous one
            log.warning("%s: unusable checkpoint (%s); trying the previous one", candidate, exc)
            continue
        if state.params_hash != params_hash:
            log.warning("%s: written for params hash %s, current is %s; starting from scratch",
                        candidate, state.params_hash, params_hash)
            return None
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["torch_rng"])
        state.resumed_from.append([state.epoch, state.batch])
        log.info("%s: resuming after epoch %d, batch %d (update %d)", candidate, state.epoch, state.batch, state.step)
        return state
    return None
