"""dvc.lock in the researcher's words: what it records for a stage, `hrm status` (what DVC would rerun,
and whether because something changed or is not here), and the stale marks (`hrm relock --stale`) that
label a committed run the code here would compute differently until it is retrained. No training code
here: the report reads the marks (hrm.bench.relock keeps runs)."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from hrm.core import paths
from hrm.core.atomic import write_json
from hrm.core.errors import DataError, HrmError
from hrm.pipeline.config import Experiment, Params
from hrm.pipeline.stages import run_name, stage_table

LOCK = Path("dvc.lock")
SHOWN = 6               # files named per line of `hrm status`


# ------------------------------------------------------------------ dvc.lock

def locked_stages() -> dict[str, Any]:
    try:
        return (yaml.safe_load(LOCK.read_text()) or {}).get("stages", {})
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as exc:
        raise DataError(f"{LOCK}: not valid YAML ({exc})") from None


def recorded_md5(stage: str, path: Path, locked: dict[str, Any] | None = None) -> str | None:
    """The md5 dvc.lock (or `locked`, its stages as read) records for `path` among `stage`'s dependencies
    (None if it records none)."""
    entry = (locked_stages() if locked is None else locked).get(stage, {})
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


# ------------------------------------------------------------------ stale marks

def train_stage(exp: Experiment, seed: int) -> str:
    return f"train-{run_name(exp, seed)}"


def stale_marks(group: str) -> dict[str, str]:
    """{train stage: reason} of the group's runs marked stale that still apply: dvc.lock still keys the run on
    the fingerprint it was trained with, and the committed fingerprint (what the code computes now) differs.
    A retrained or relocked run, or code put back as it was, drops its mark by itself."""
    path = paths.stale_file(group)
    try:
        marks = json.loads(path.read_text())
        locked = locked_stages() if marks else {}           # read once: dvc.lock is large
        return {stage: m["reason"] for stage, m in marks.items() if _applies(stage, m, locked)}
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a stale-marks file ({type(exc).__name__}: {exc}); fix or delete it") from None


def _applies(stage: str, mark: dict[str, str], locked: dict[str, Any]) -> bool:
    fingerprint = Path(mark["fingerprint_file"])
    now = md5(fingerprint.read_bytes()) if fingerprint.is_file() else None
    return recorded_md5(stage, fingerprint, locked) == mark["keyed_on"] != now


def mark_stale(exp: Experiment, seed: int, reason: str) -> Path:
    """Record that the committed run (exp, seed) was computed by code that now computes differently."""
    stage, fingerprint = train_stage(exp, seed), paths.fingerprint_file(exp.group, exp.name, seed)
    keyed_on = recorded_md5(stage, fingerprint)
    if keyed_on is None:
        raise HrmError(f"{stage}: dvc.lock keys it on no fingerprint, so a mark could not tell when it is retrained; "
                       f"relock or retrain it instead")
    path = paths.stale_file(exp.group)
    marks = json.loads(path.read_text()) if path.is_file() else {}
    marks[stage] = {"reason": reason, "fingerprint_file": str(fingerprint), "keyed_on": keyed_on,
                    "marked": datetime.date.today().isoformat()}
    write_json(path, dict(sorted(marks.items())))
    return path


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
