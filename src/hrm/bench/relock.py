"""`hrm relock EXPERIMENT --seed S`: keep a committed run whose fingerprint moved although its computation
did not, and say so when it did.

A training is keyed by its fingerprint (hrm.train.fingerprint), so a refactor keeps it. When the
fingerprint does change and a person believes the run still stands (the probe itself changed, or a
platform rounds differently), relock checks that belief instead of taking it: it retrains the run's
first batches at full size against its committed steps.csv, checks the schedule against every rate in
its history.csv, compares the new fingerprint with the recorded one field by field, and only then
records the new fingerprint in dvc.lock for the fingerprint and the train stage (no model.pt needed).
Refused, it can instead mark the run stale (hrm.pipeline.lockfile) so that the audit page labels it.
"""

from __future__ import annotations

import csv
import importlib
import logging
from pathlib import Path
from typing import Any

from hrm.core import paths
from hrm.core.errors import DataError, HrmError
from hrm.pipeline.config import Params
from hrm.pipeline.lockfile import locked_stages, mark_stale, recorded_fingerprint, train_stage

ROUNDING = 1e-3          # largest relative difference `--accept` takes as rounding (the probe keeps 6 digits)
REPLAY_ROUNDING = 1e-4   # largest loss difference over the replayed batches `--accept` takes as rounding
# Fingerprint sections a platform cannot move: a difference there is a changed computation, never rounding.
EXACT = ("params_hash", "run", "schedule", "data")


# ------------------------------------------------------------------ dvc.lock

def commit_stages(names: list[str]) -> None:
    """Record the stages' dependencies (and the fingerprint stage's output) as they are now, keeping the
    train stage's recorded outputs: `dvc commit` without needing model.pt here."""
    try:
        from dvc.repo import Repo
    except ImportError:
        raise HrmError("relock: DVC is not installed (pip install -e '.[workflow]')") from None
    logging.getLogger("dvc").propagate = False            # DVC prints its own lines; ours would repeat them
    with Repo(".") as repo, repo.lock:
        for name in names:
            (stage,) = repo.stage.collect(name)
            stage.save_deps()
            if name.startswith("fingerprint-"):
                stage.save_outs()
            stage.dump(update_pipeline=False)


# ------------------------------------------------------------------ comparing fingerprints

def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"steps[0].loss": 2.3, ...}: every leaf of a fingerprint under its path."""
    if isinstance(value, dict):
        items = [(f"{prefix}.{key}" if prefix else key, sub) for key, sub in value.items()]
    elif isinstance(value, list):
        items = [(f"{prefix}[{i}]", sub) for i, sub in enumerate(value)]
    else:
        return {prefix: value}
    return {k: v for path, sub in items for k, v in flatten(sub, path).items()}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any, float | None]]:
    """(field, old, new, relative difference or None) of every field that differs, the probe's own excluded."""
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(a.keys() | b.keys()):
        if key.startswith("probe.") or a.get(key) == b.get(key):
            continue
        x, y = a.get(key), b.get(key)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        rel = abs(x - y) / max(abs(x), abs(y), 1e-12) if numbers else None
        out.append((key, x, y, rel))
    return out


def rounding_only(diffs: list[tuple[str, Any, Any, float | None]]) -> bool:
    """Whether every difference is a float in a computed section, within ROUNDING."""
    return all(rel is not None and rel <= ROUNDING and not key.startswith(EXACT) and not key.endswith(
        ("updates", "halted", "act_steps")) for key, _, _, rel in diffs)


# ------------------------------------------------------------------ the committed run's own evidence

def schedule_check(run: Any, history: Path) -> tuple[int, float]:
    """(rows, largest difference) between history.csv's learning rates and the trainer's at those updates."""
    try:
        with open(history, newline="") as fh:
            rows = [(int(r["step"]), float(r["lr"])) for r in csv.DictReader(fh)]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{history}: unreadable ({type(exc).__name__}: {exc}); train the run first") from None
    worst = max((abs(run.learning_rates(step - 1)["lr"] - lr) for step, lr in rows), default=0.0)
    return len(rows), worst


def relock(params: Params, name: str, seed: int, batches: int, accept: bool, stale: str | None = None) -> int:
    """`hrm relock`: explain how the run's fingerprint moved and keep the run if its computation did not.
    0: recorded, or refused but marked stale (`stale`: the reason); 1: refused, the computation changed
    (retrain, --accept rounding, or mark it stale)."""
    from hrm.bench.train import replay
    from hrm.train import fingerprint as fp

    exp = params.experiment(name)
    train = train_stage(exp, seed)
    fp_stage = train.replace("train-", "fingerprint-", 1)
    path = paths.fingerprint_file(exp.group, name, seed)
    if train not in locked_stages():
        raise HrmError(f"{train}: dvc.lock records no such run, so there is nothing to keep; train it "
                       f"(dvc repro {train})")
    old = recorded_fingerprint(train, path)
    data = importlib.import_module(exp.study.modules["train"]).RUN.load_data(exp.dataset)     # once, for all three
    result = replay(params, name, seed, batches, data)    # the run's own settings, before the probe pins its own
    rows, worst_lr = schedule_check(fp.make_run(params, exp, seed, data), paths.history_file(exp.group, name, seed))
    new = fp.probe(params, name, seed, data)
    say = print
    if old is None or old.get("probe") != new["probe"]:
        why = ("locked before fingerprints, or the recorded file is gone" if old is None else
               f"recorded with another probe, {old.get('probe')}")
        say(f"{train}: no comparable fingerprint recorded ({why}): the committed run's own files are the "
            f"only evidence")
        diffs: list[tuple[str, Any, Any, float | None]] = []
    else:
        diffs = differences(old, new)
        say(f"{train}: the fingerprint differs from the recorded one in {len(diffs)} field(s)"
            + (":" if diffs else (" (the probe's own settings only)" if old != new else "")))
        for key, x, y, rel in diffs[:40]:
            say(f"  {key}: {x} -> {y}" + (f"  (relative {rel:.1e})" if rel is not None else ""))
        if len(diffs) > 40:
            say(f"  ... and {len(diffs) - 40} more")
    say(f"replay of the first {result['batches']} full batches against {paths.steps_file(exp.group, name, seed)}: "
        + ("identical" if result["same"] else f"largest loss difference {result['max_abs_difference']:.2e}"))
    say(f"learning rate at the {rows} updates of {paths.history_file(exp.group, name, seed)}: "
        + ("identical" if worst_lr == 0.0 else f"largest difference {worst_lr:.2e}"))
    exact = result["same"] and worst_lr == 0.0 and not diffs
    rounding = result["max_abs_difference"] <= REPLAY_ROUNDING and worst_lr == 0.0 and rounding_only(diffs)
    if not exact and not (accept and rounding):
        why = ("differences of rounding size: rerun with --accept if a platform change explains them" if rounding
               else "the computation behind the committed run changed (if you changed the probe itself, raise "
               "hrm.train.fingerprint.VERSION)")
        if stale is not None:
            fp.write(path, new)                  # what the code computes now; the training keeps its old key
            commit_stages([fp_stage])
            marked = mark_stale(exp, seed, stale)
            say(f"not recorded ({why}); marked stale in {marked}: `hrm report {exp.group}` labels the run until it is "
                f"retrained (dvc repro {train}), and dvc status keeps listing its training")
            return 0
        say(f"refused: {why}; retrain it (dvc repro {train}), or label it stale with --stale REASON")
        return 1
    fp.write(path, new)
    commit_stages([fp_stage, train])
    say(f"recorded: {path} and dvc.lock ({fp_stage}, {train})"
        + (" after --accept of rounding-size differences" if not exact else ""))
    return 0


