"""dvc.lock in the researcher's words: `hrm status` (what DVC would rerun, and why) and `hrm relock`
(keep a committed run whose fingerprint moved although its computation did not).

A training is keyed by its fingerprint (hrm.train.fingerprint), so a refactor keeps it. When the
fingerprint does change and a person believes the run still stands (the probe itself changed, or a
platform rounds differently), `relock` checks that belief instead of taking it: it retrains the run's
first batches at full size against its committed steps.csv, checks the schedule against every rate in
its history.csv, compares the new fingerprint with the recorded one field by field, and only then
records the new fingerprint in dvc.lock for the fingerprint and the train stage (no model.pt needed).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from hrm import paths
from hrm.config import Params
from hrm.errors import DataError, HrmError
from hrm.stages import run_name, stage_table

log = logging.getLogger("hrm")

LOCK = Path("dvc.lock")
ROUNDING = 1e-3          # largest relative difference `--accept` takes as rounding (the probe keeps 6 digits)
REPLAY_ROUNDING = 1e-4   # largest loss difference over the replayed batches `--accept` takes as rounding
SHOWN = 6               # files named per line of `hrm status`
# Fingerprint sections a platform cannot move: a difference there is a changed computation, never rounding.
EXACT = ("params_hash", "run", "schedule", "data")


# ------------------------------------------------------------------ dvc.lock

def locked_stages() -> dict[str, Any]:
    try:
        return (yaml.safe_load(LOCK.read_text()) or {}).get("stages", {})
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as exc:
        raise DataError(f"{LOCK}: not valid YAML ({exc})") from None


def recorded_md5(stage: str, path: Path) -> str | None:
    """The md5 dvc.lock records for `path` among `stage`'s dependencies (None if it records none)."""
    entry = locked_stages().get(stage, {})
    return next((d.get("md5") for d in entry.get("deps", []) if d.get("path") == str(path)), None)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def recorded_fingerprint(stage: str, path: Path) -> dict[str, Any] | None:
    """The fingerprint the train stage was locked with: the file here, or the committed one in git,
    whichever has the md5 dvc.lock records; None when the lock records none (a run locked before
    fingerprints) or neither copy has it."""
    want = recorded_md5(stage, path)
    if want is None:
        return None
    copies = [path.read_bytes()] if path.is_file() else []
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True)
    if shown.returncode == 0:
        copies.append(shown.stdout)
    found = next((c for c in copies if md5(c) == want), None)
    return json.loads(found) if found is not None else None


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


def relock(params: Params, name: str, seed: int, batches: int, accept: bool) -> int:
    """`hrm relock`: explain how the run's fingerprint moved and keep the run if its computation did not.
    0: recorded (or nothing to do); 1: refused, the computation changed (retrain, or --accept rounding)."""
    from hrm.bench.train import replay
    from hrm.train import fingerprint as fp

    exp = params.experiment(name)
    run = run_name(exp, seed)
    fp_stage, train_stage = f"fingerprint-{run}", f"train-{run}"
    path = paths.fingerprint_file(exp.group, name, seed)
    if train_stage not in locked_stages():
        raise HrmError(f"{train_stage}: dvc.lock records no such run, so there is nothing to keep; train it "
                       f"(dvc repro {train_stage})")
    old = recorded_fingerprint(train_stage, path)
    result = replay(params, name, seed, batches)          # the run's own settings, before the probe pins its own
    rows, worst_lr = schedule_check(fp.make_run(params, exp, seed), paths.history_file(exp.group, name, seed))
    new = fp.probe(params, name, seed)
    say = print
    if old is None or old.get("probe") != new["probe"]:
        why = ("locked before fingerprints, or the recorded file is gone" if old is None else
               f"recorded with another probe, {old.get('probe')}")
        say(f"{train_stage}: no comparable fingerprint recorded ({why}): the committed run's own files are the "
            f"only evidence")
        diffs: list[tuple[str, Any, Any, float | None]] = []
    else:
        diffs = differences(old, new)
        say(f"{train_stage}: the fingerprint differs from the recorded one in {len(diffs)} field(s)"
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
        say(f"refused: {why}; otherwise retrain it (dvc repro {train_stage})")
        return 1
    fp.write(path, new)
    commit_stages([fp_stage, train_stage])
    say(f"recorded: {path} and dvc.lock ({fp_stage}, {train_stage})"
        + (" after --accept of rounding-size differences" if not exact else ""))
    return 0


# ------------------------------------------------------------------ hrm status

def dvc_status() -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise HrmError(f"dvc status failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    return json.loads(out.stdout or "{}")


def explain(entries: list[Any]) -> str:
    """One line for one stage of `dvc status --json`: what is missing here versus what changed."""
    missing, changed = [], []
    for entry in entries:
        if isinstance(entry, str):
            changed.append(entry)
            continue
        for kind, files in entry.items():
            for path, state in files.items():
                if isinstance(state, dict):                       # params.yaml: {key: modified}
                    changed += [f"params {k} {v}" for k, v in state.items()]
                elif state in ("deleted", "not in cache"):
                    missing.append(path)
                elif path.endswith("fingerprint.json") and kind == "changed deps":
                    changed.append(f"computation (fingerprint {state})")
                else:
                    changed.append(f"{path} {state}")
    def listed(items: list[str]) -> str:
        return ", ".join(items[:SHOWN]) + (f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else "")

    parts = []
    if changed:
        parts.append("changed: " + listed(changed))
    if missing:
        parts.append("not here (dvc pull, or rebuild/retrain): " + listed(missing))
    return "; ".join(parts)


def status(params: Params, group: str | None) -> int:
    """`hrm status`: every stage DVC would rerun, and whether because something changed or is not here."""
    found = dvc_status()
    groups = {s.name: paths.group_of_output(next(iter(s.outs + s.outs_no_cache), "")) or s.name.split("-", 1)[1]
              for s in stage_table(params)}
    shown = {name: entries for name, entries in found.items() if group in (None, groups.get(name))}
    for name, entries in sorted(shown.items()):
        print(f"{name}: {explain(entries)}")
    print(f"{len(shown)} stage(s) would run" if shown else "every stage is up to date")
    return 0
