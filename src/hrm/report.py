"""`hrm report GROUP`: the audit table, paper vs reproduced, with provenance for each reproduced cell.

One row per (experiment, seed, metric). A run that is missing is "not run"; a run that stopped
before its planned epochs is "cut short"; neither ever shows a paper number as reproduced.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

from hrm import paths
from hrm.atomic import write_text
from hrm.config import Params
from hrm.errors import DataError
from hrm.paper import PAPER, SOURCE

log = logging.getLogger("hrm")

# (metric key, label, how a fraction in metrics.json becomes the table's unit)
METRICS = (("test_acc", "test accuracy (%)", 100.0), ("best_test_acc", "best test accuracy (%)", 100.0),
           ("train_acc", "train accuracy (%)", 100.0), ("mean_seconds_per_epoch", "seconds per epoch", 1.0),
           ("total_seconds", "total seconds", 1.0), ("params", "parameters", 1.0))
PAPER_KEY = {"mean_seconds_per_epoch": "seconds_per_epoch"}
COLUMNS = ("experiment", "seed", "mode", "metric", "paper", "reproduced", "difference", "status", "device", "commit",
           "params_hash", "date", "command")


REQUIRED = {"complete": bool, "epochs": int, "epochs_planned": int, "provenance": dict}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable metrics file ({exc})") from None
    if not isinstance(metrics, dict):
        raise DataError(f"{path}: metrics file holds {type(metrics).__name__}, expected an object")
    for key, kind in REQUIRED.items():
        if not isinstance(metrics.get(key), kind):
            raise DataError(f"{path}: metrics field {key!r} is {metrics.get(key)!r}, expected {kind.__name__}")
    for key, _, _ in METRICS:
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise DataError(f"{path}: metrics field {key!r} is {value!r}, expected a number")
    return metrics


def _evaluated(path: Path) -> float | None:
    """The test accuracy `hrm evaluate` measured (ARC: pass@2 with voting), or None before evaluation."""
    try:
        value = json.loads(path.read_text()).get("test_acc")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{path}: unreadable evaluation file ({exc}); run `hrm evaluate` again") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{path}: test_acc is {value!r}, expected a number; run `hrm evaluate` again")
    return float(value)


def _status(metrics: dict[str, Any] | None) -> str:
    if metrics is None:
        return "not run"
    if not metrics.get("complete", False):
        return f"cut short ({metrics['epochs']}/{metrics['epochs_planned']} epochs)"
    return "complete"


def rows(params: Params, group: str) -> list[dict[str, Any]]:
    out = []
    for exp in params.experiments.values():
        if exp.group != group:
            continue
        paper = PAPER.get(exp.name, {})
        for seed in exp.seeds:
            metrics = _load(paths.metrics_file(group, exp.name, seed))
            # The headline is the evaluation's number (for ARC: voting over the augmented versions).
            evaluated = _evaluated(paths.eval_file(group, exp.name, seed)) if metrics else None
            prov = (metrics or {}).get("provenance", {})
            device = ((metrics or {}).get("gpu") or {}).get("device_name") or prov.get("hardware", {}).get("cpu")
            commit = prov.get("commit")
            for key, label, scale in METRICS:
                published = paper.get(PAPER_KEY.get(key, key))
                value = metrics.get(key) if metrics else None
                if key == "test_acc" and evaluated is not None:
                    value = evaluated
                reproduced = None if value is None else round(float(value) * scale, 2)
                out.append({
                    "experiment": exp.name, "seed": seed, "mode": exp.mode, "metric": label,
                    "paper": None if published is None else float(published), "reproduced": reproduced,
                    "difference": None if published is None or reproduced is None else round(reproduced - published, 2),
                    "status": _status(metrics), "device": device,
                    "commit": (commit[:10] + ("+dirty" if prov.get("dirty") else "")) if commit else None,
                    "params_hash": prov.get("params_hash"), "date": prov.get("date"), "command": prov.get("command"),
                })
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) >= 1000 else f"{value:.2f}"
    return str(value).replace("|", "\\|")


def markdown(frame: pl.DataFrame, group: str) -> str:
    lines = [f"# HRM studies: paper vs reproduced ({group})", "",
             f"Paper column: {SOURCE}. Reproduced column: this pipeline's runs, each with its provenance. "
             "A dash means no number (not in the paper, or not run). Test accuracy is `hrm evaluate`'s (ARC: "
             "pass@2 with voting); best test accuracy is the best of training's test passes (puzzles: exact "
             "accuracy, no voting). Mode `faithful` reproduces the author code's quirks (REFERENCE I.5), "
             "`corrected` fixes them.", "",
             "| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines) + "\n"


def report(params: Params, group: str) -> list[Path]:
    table = rows(params, group)
    if not table:
        raise DataError(f"no experiments in group {group!r} in {params.path}")
    frame = pl.DataFrame(table, schema={c: pl.Float64 if c in ("paper", "reproduced", "difference") else
                                        (pl.Int64 if c == "seed" else pl.Utf8) for c in COLUMNS})
    md, csv = paths.table_files(group)
    write_text(csv, frame.write_csv())
    write_text(md, markdown(frame, group))
    done = frame.filter(pl.col("status") == "complete")["experiment"].n_unique()
    log.info("%s: %d rows, %d experiments complete -> %s, %s", group, len(frame), done, md, csv)
    return [md, csv]
