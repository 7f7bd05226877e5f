"""Checkpoints: everything a killed run needs to continue exactly where it stopped.

A checkpoint is written at every test-set evaluation and when a run is asked to stop (SIGTERM/SIGINT).
File layout: one line with the sha256 of the payload, then the torch payload. The previous checkpoint
is kept as `checkpoint.prev.pt`; a corrupted latest one is detected by its checksum and the previous
one is used instead, with a warning. The final model file (model.pt) is written and read here too.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hrm.core import paths
from hrm.core.atomic import atomic_path
from hrm.core.errors import DataError

log = logging.getLogger("hrm")


@dataclass
class RunState:
    """Progress of one run, saved with the model and optimizer; every field means the same in both studies."""

    params_hash: str
    epoch: int = 0                                             # epochs completed: the next example is in epoch + 1
    offset: int = 0                                            # examples of epoch + 1 already trained on
    step: int = 0                                              # optimizer updates taken (the one step counter)
    history: list[dict[str, Any]] = field(default_factory=list)   # one row per test-set evaluation
    step_losses: list[float] = field(default_factory=list)     # one per training batch, in order
    since_eval: dict[str, float] = field(default_factory=dict)    # running sums since the last history row
    elapsed_s: float = 0.0                                     # wall time spent in earlier processes
    resumed_from: list[list[int]] = field(default_factory=list)   # (epoch, offset) of each resume

    @property
    def batches(self) -> int:
        return len(self.step_losses)


def previous(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def save(path: Path, state: RunState, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         extra: dict[str, Any] | None = None) -> None:
    """Write atomically, keeping the last good checkpoint as checkpoint.prev.pt.

    `extra` holds what one trainer alone needs to resume exactly (the puzzle trainer's ACT carry
    and its exploration RNG); tensors only, so the restricted unpickler can read it back.
    """
    buffer = io.BytesIO()
    torch.save({"state": asdict(state), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(), "extra": extra or {}}, buffer)
    payload = buffer.getvalue()
    if path.exists() and _intact(path):       # a damaged latest never replaces the good previous one
        os.replace(path, previous(path))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(hashlib.sha256(payload).hexdigest().encode() + b"\n")
        fh.write(payload)
    _WRITTEN[path] = _stamp(path)


# Checkpoints this process wrote, by (size, mtime): known intact without reading them back.
_WRITTEN: dict[Path, tuple[int, int]] = {}


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _intact(path: Path) -> bool:
    if _WRITTEN.get(path) == _stamp(path):
        return True
    try:
        read(path)
    except Exception as exc:  # damaged or foreign
        log.warning("%s: damaged (%s); keeping %s as the previous checkpoint", path, exc, previous(path).name)
        return False
    return True


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
           optimizer: torch.optim.Optimizer) -> tuple[RunState, dict[str, Any]] | None:
    """Restore model and optimizer from the newest valid checkpoint of this configuration;
    returns its RunState and its `extra` payload."""
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
        state.resumed_from.append([state.epoch, state.offset])
        log.info("%s: resuming in epoch %d at example %d (update %d)", candidate, state.epoch + 1, state.offset,
                 state.step)
        return state, payload.get("extra", {})
    return None


# ------------------------------------------------------------------ the final model file (model.pt)

def model_bytes(experiment: dict[str, Any], seed: int, model: torch.nn.Module,
                extra: dict[str, Any] | None = None) -> bytes:
    """model.pt: the experiment as a dict, the seed and the CPU state dict (and `extra`: an imported
    checkpoint's numerics and source). Serialised in memory first, so that a full disk fails in our
    atomic write, with our message, not inside torch."""
    buffer = io.BytesIO()
    torch.save({"experiment": experiment, "seed": seed, **(extra or {}),
                "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, buffer)
    return buffer.getvalue()


def read_model_file(path: Path, retrain: str) -> dict[str, Any]:
    """A run's model.pt as saved; a missing or damaged file is a DataError saying `retrain`."""
    if not path.is_file():
        raise DataError(f"{path}: no trained model; run `{retrain}` first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on damaged files
        raise DataError(f"{path}: not a readable model file ({type(exc).__name__}: {str(exc)[:200]}); "
                        f"run `{retrain}` again") from None


def load_model_file(path: Path, model: torch.nn.Module, retrain: str, payload: dict[str, Any] | None = None,
                    params_hash: str | None = None) -> torch.nn.Module:
    """Weights of a run's model.pt (or of its `payload`, already read) into `model`; with `params_hash`,
    refuses a file trained under other params (its own record, else its run's metrics.json)."""
    payload = read_model_file(path, retrain) if payload is None else payload
    if params_hash is not None:
        trained = payload.get("params_hash") or _metrics_hash(path.with_name(Path(paths.METRICS).name))
        if trained is not None and trained != params_hash:
            raise DataError(f"{path}: trained with params {trained}, the params are now {params_hash} (the "
                            f"experiment, its model or recipe changed since); run `{retrain}` again")
    try:
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise DataError(f"{path}: not a model file for this experiment with the current params "
                        f"({type(exc).__name__}: {str(exc)[:200]}); run `{retrain}` again") from None
    return model


def _metrics_hash(path: Path) -> str | None:
    """The params hash a model file's run recorded (model files written before they carried their own)."""
    try:
        return json.loads(path.read_text())["provenance"]["params_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
