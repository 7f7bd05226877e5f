"""`hrm report GROUP`: the audit tables, paper vs reproduced, with provenance for each reproduced cell.

summary.md is for reading: a few sentences saying what the runs show, one headline row per run
(paper vs reproduced side by side; a demo row names the paper experiment it stands in for), the
detail metrics one row per run, and the provenance of every run. summary.csv is the long form,
one row per (experiment, seed, metric), each with its provenance. A run that is missing is "not
run"; a run that stopped before its planned epochs is "cut short"; neither ever shows a paper
number as reproduced.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from hrm.core import paths
from hrm.core.atomic import write_text
from hrm.core.errors import DataError
from hrm.pipeline.config import Experiment, Params
from hrm.pipeline.lockfile import stale_marks, train_stage
from hrm.report.paper import PAPER, SOURCE

log = logging.getLogger("hrm")

# (metric key, label, how a fraction in metrics.json becomes the table's unit)
METRICS = (("test_acc", "test accuracy (%)", 100.0), ("best_test_acc", "best test accuracy (%)", 100.0),
           ("train_acc", "train accuracy (%)", 100.0), ("mean_seconds_per_epoch", "seconds per epoch", 1.0),
           ("total_seconds", "total seconds", 1.0), ("params", "parameters", 1.0))
# Numbers only a puzzle evaluation has, at the trained M_max: (key in eval.json's by_segments, label)
EVAL_METRICS = (("token_acc", "token accuracy (%)"), ("one_view_pass@1", "pass@1, one view, no voting (%)"),
                ("pass@1", "pass@1, voted (%)"), ("pass@2", "pass@2, voted (%)"),
                ("partial_pass@2", "pass@2, voted, partial credit per test input (TRM's score) (%)"))
HEADLINE_LABELS = {"exact_acc": "exact accuracy (%)", "pass@2": "pass@2, voted (%)"}
PAPER_KEY = {"mean_seconds_per_epoch": "seconds_per_epoch"}
COLUMNS = ("experiment", "seed", "mode", "metric", "paper", "reproduced", "difference", "status", "device", "commit",
           "params_hash", "date", "command")
REQUIRED = {"complete": bool, "epochs": int, "epochs_planned": int, "provenance": dict}
INTRO = {
    "paper": "The paper's experiments as run by this pipeline, beside the published numbers.",
    "demo": "The demo runs the papers' code paths (the image HRM and CNN; the puzzle HRM with ACT, Q-learning, "
            "one-step gradient, deep supervision, puzzle embeddings, Adam-atan2 and ARC voting; TRM with its shared "
            "network, last-recursion gradient, single-pass halting and EMA) at toy sizes on "
            "embedded or generated data, in minutes on a CPU. Its numbers are not the papers' and are not "
            "compared with them; what carries over is the direction of each claim.",
}


def _read_json(path: Path, what: str, again: str) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable {what} ({exc}){again}") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: {what} holds {type(value).__name__}, expected an object{again}")
    return value


def _load(path: Path) -> dict[str, Any] | None:
    metrics = _read_json(path, "metrics file", "")
    if metrics is None:
        return None
    for key, kind in REQUIRED.items():
        if not isinstance(metrics.get(key), kind):
            raise DataError(f"{path}: metrics field {key!r} is {metrics.get(key)!r}, expected {kind.__name__}")
    for key, _, _ in METRICS:
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise DataError(f"{path}: metrics field {key!r} is {value!r}, expected a number")
    return metrics


def _evaluation(path: Path) -> dict[str, Any] | None:
    """What `hrm evaluate` measured (test_acc: for ARC pass@2 with voting), or None before evaluation."""
    result = _read_json(path, "evaluation file", "; run `hrm evaluate` again")
    if result is None:
        return None
    value = result.get("test_acc")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{path}: test_acc is {value!r}, expected a number; run `hrm evaluate` again")
    return result


def run_status(metrics: dict[str, Any] | None) -> str:
    if metrics is None:
        return "not run"
    if not metrics.get("complete", False):
        return f"cut short ({metrics['epochs']}/{metrics['epochs_planned']} epochs)"
    return "complete"


@dataclass(frozen=True)
class RunResult:
    exp: Experiment
    seed: int
    metrics: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    stale: str | None = None          # why it is not what params.yaml and the code here would make now

    @property
    def name(self) -> str:
        return f"{self.exp.name} seed {self.seed}"

    @property
    def at_trained(self) -> dict[str, Any]:
        """The evaluation's scores at the trained M_max (puzzle runs), else {}."""
        e = self.evaluation or {}
        return (e.get("by_segments") or {}).get(str(e.get("trained_halt_max_steps")), {})

    def headline(self) -> tuple[str, float | None]:
        """(label, percent): the evaluated test number, or training's last test pass before evaluation."""
        if self.evaluation is not None:
            label = HEADLINE_LABELS.get(self.evaluation.get("headline_name", ""), "test accuracy (%)")
            return label, round(100 * float(self.evaluation["test_acc"]), 2)
        value = (self.metrics or {}).get("test_acc")
        return "test accuracy (%)", None if value is None else round(100 * float(value), 2)


def collect(params: Params, group: str) -> list[RunResult]:
    out, stale = [], stale_marks(group)
    for exp in params.experiments.values():
        if exp.group == group:
            for seed in exp.seeds:
                metrics = _load(paths.metrics_file(group, exp.name, seed))
                evaluation = _evaluation(paths.eval_file(group, exp.name, seed)) if metrics else None
                mark = stale.get(train_stage(exp, seed))
                why = [w for w in (params_changed(exp, metrics, evaluation),
                                   mark and f"computed by older code ({mark})") if w]
                out.append(RunResult(exp, seed, metrics, evaluation, "; ".join(why) or None))
    return out


def params_changed(exp: Experiment, metrics: dict[str, Any] | None, evaluation: dict[str, Any] | None) -> str | None:
    """Why a run's files do not belong to the experiment as params.yaml has it now, if they do not."""
    now = exp.params_hash()
    for what, record in (("trained", metrics), ("evaluated", evaluation)):
        then = ((record or {}).get("provenance") or {}).get("params_hash")
        if then is not None and then != now:
            return f"{what} with params {then}, now {now}"
    return None


def long_rows(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per (run, metric) with the run's provenance: the CSV."""
    out = []
    for r in results:
        paper = PAPER.get(r.exp.name, {})
        prov = (r.metrics or {}).get("provenance", {})
        device = ((r.metrics or {}).get("gpu") or {}).get("device_name") or prov.get("hardware", {}).get("cpu")
        commit = prov.get("commit")
        status = run_status(r.metrics) + (f"; stale: {r.stale}" if r.stale else "")
        common = {"experiment": r.exp.name, "seed": r.seed, "mode": r.exp.mode, "status": status,
                  "device": device, "commit": (commit[:10] + ("+dirty" if prov.get("dirty") else "")) if commit
                  else None, "params_hash": prov.get("params_hash"), "date": prov.get("date"),
                  "command": prov.get("command")}
        values = []
        for key, label, scale in METRICS:
            value = (r.metrics or {}).get(key)
            if key == "test_acc":
                label, value = r.headline()
            elif value is not None:
                value = round(float(value) * scale, 2)
            values.append((key, label, value))
        values += [(key, label, round(100 * float(r.at_trained[key]), 2)) for key, label in EVAL_METRICS
                   if isinstance(r.at_trained.get(key), (int, float))]
        for key, label, value in values:
            published = paper.get(PAPER_KEY.get(key, key))
            out.append(common | {
                "metric": label, "paper": None if published is None else float(published), "reproduced": value,
                "difference": None if published is None or value is None else round(value - published, 2)})
    return out


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):   # nan: e.g. no row halted
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) >= 1000 else f"{value:.2f}"
    return str(value).replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def _stands_for(r: RunResult) -> str | None:
    target = r.exp.stands_for
    if target is None:
        return None
    published = PAPER.get(target, {}).get("test_acc")
    return target if published is None else f"{target} (paper {published:.2f})"


@dataclass(frozen=True)
class SeedStats:
    """The headline over the complete runs of one experiment's seed list."""

    n: int
    mean: float
    sd: float              # sample standard deviation (n - 1); 0 for one seed
    lo: float
    hi: float

    @classmethod
    def of(cls, values: list[float]) -> SeedStats | None:
        if not values:
            return None
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        return cls(len(values), round(mean, 2), round(sd, 2), min(values), max(values))

    def text(self) -> str:
        seeds = f"{self.n} seed{'s' if self.n > 1 else ''}"
        return f"{self.mean:.2f} ± {self.sd:.2f} ({self.lo:.2f}–{self.hi:.2f}, {seeds})"

    def short(self) -> str:
        """The mean alone for one seed; mean ± sd and range for several."""
        return self.text() if self.n > 1 else f"{self.mean:.2f}"

    def placement(self, published: float) -> str:
        """Where a published number falls against our seeds' range."""
        return "inside our range" if self.lo <= published <= self.hi else "outside our range"


def seed_stats(results: list[RunResult], exp: Experiment) -> SeedStats | None:
    values = [r.headline()[1] for r in results if r.exp.name == exp.name and run_status(r.metrics) == "complete"]
    return SeedStats.of([v for v in values if v is not None])


def _statistics_rows(results: list[RunResult]) -> list[list[Any]]:
    """One row per experiment run with several seeds: mean ± sd and range of the complete runs."""
    out = []
    for exp in dict.fromkeys(r.exp for r in results):
        if len(exp.seeds) < 2:
            continue
        stats = seed_stats(results, exp)
        label = next(r for r in results if r.exp is exp).headline()[0]
        published = PAPER.get(exp.name, {}).get("test_acc")
        inside = None if stats is None or published is None else stats.placement(published)
        out.append([f"{exp.name}, {len(exp.seeds)} seeds", _stands_for(next(r for r in results if r.exp is exp))
                    or "—", label, published, stats.text() if stats else None,
                    None if stats is None or published is None else round(stats.mean - published, 2),
                    f"{stats.n if stats else 0} of {len(exp.seeds)} complete" + (f"; paper {inside}" if inside
                                                                                   else "")])
    return out


def _history(r: RunResult) -> list[dict[str, str]]:
    path = paths.history_file(r.exp.group, r.exp.name, r.seed)
    try:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable training history ({exc})") from None


def frozen_note(r: RunResult) -> str | None:
    """A sentence when the learning rate reached 0 before the last epoch: later epochs cannot learn.

    In faithful mode the image HRM's schedule counts batches while each batch makes two updates
    (REFERENCE I.5.1), so on MNIST (cosine to 0) the weights stop changing halfway through training.
    """
    rows = _history(r)
    try:
        lrs = [float(row["lr"]) for row in rows]
        tests = [100 * float(row["test_acc"]) for row in rows]
    except (KeyError, ValueError):
        raise DataError(f"{paths.history_file(r.exp.group, r.exp.name, r.seed)}: history rows need numeric "
                        "lr and test_acc columns") from None
    if not any(lr == 0.0 for lr in lrs[:-1]):
        return None
    first = lrs.index(0.0) + 1
    why = (" (faithful mode: the schedule counts batches, the HRM updates twice per batch; REFERENCE I.5.1)"
           if r.exp.mode == "faithful" else "")
    return (f"  * {r.name}: the learning rate is 0 by the end of epoch {first} of {len(lrs)}{why}, so the weights "
            f"stop changing; test accuracy by epoch: {', '.join(f'{t:.2f}' for t in tests)}.")


def findings(results: list[RunResult]) -> list[str]:
    """Sentences from the numbers: each data set's runs side by side, and each inference-time curve."""
    lines = []
    by_dataset: dict[str, list[RunResult]] = {}
    for r in results:
        by_dataset.setdefault(r.exp.dataset, []).append(r)
    for dataset, runs in by_dataset.items():
        done = [(r, r.headline()) for r in runs if r.metrics is not None]
        if not done:
            lines.append(f"* {dataset}: not run yet.")
            continue
        parts = []
        for exp in dict.fromkeys(r.exp for r, _ in done):
            stats = seed_stats(results, exp)
            if len(exp.seeds) > 1 and stats is not None:
                parts.append(f"{exp.name} {stats.text()}")
            else:
                parts += [f"{r.exp.name} {value:.2f}" for r, (_, value) in done if r.exp is exp and value is not None]
        label = done[0][1][0]
        cut = [r.name for r in runs if run_status(r.metrics) != "complete"]
        note = f" (not complete: {', '.join(cut)})" if cut else ""
        lines.append(f"* {dataset}, {label}: {' vs '.join(parts)}{note}.")
        for r, _ in done:
            note = frozen_note(r)
            if note:
                lines.append(note)
            by = (r.evaluation or {}).get("by_segments") or {}
            if len(by) > 1:
                curve = ", ".join(f"{m}: {100 * by[m]['headline']:.1f}" for m in sorted(by, key=int))
                lines.append(f"  * {r.exp.name}, trained with M_max = {r.evaluation['trained_halt_max_steps']}, "
                             f"by segments at test time: {curve}.")
            if "one_view_pass@1" in r.at_trained:
                a = r.at_trained
                lines.append(f"  * {r.exp.name}: pass@1 {100 * a['one_view_pass@1']:.1f} from the one unaugmented "
                             f"view, {100 * a['pass@1']:.1f} voted over the augmented versions; pass@2 voted "
                             f"{100 * a['pass@2']:.1f}.")
    return lines


def markdown(results: list[RunResult], rows: list[dict[str, Any]], group: str) -> str:
    head = [[r.name, _stands_for(r) or "—", *_headline_cells(r, rows)] for r in results]
    head += _statistics_rows(results)
    detail_labels = [label for label in dict.fromkeys(row["metric"] for row in rows)
                     if label not in {r.headline()[0] for r in results}]
    cells = {(row["experiment"], row["seed"], row["metric"]): row["reproduced"] for row in rows}
    detail = [[r.name, *[cells.get((r.exp.name, r.seed, label)) for label in detail_labels]] for r in results]
    by_run = {(row["experiment"], row["seed"]): row for row in rows}
    prov = [[r.name, *[by_run[(r.exp.name, r.seed)][k] for k in ("device", "commit", "params_hash", "date",
                                                                  "command")]] for r in results]
    lines = [f"# HRM studies: paper vs reproduced ({group})", "", INTRO.get(group, ""), "", "## What the runs show",
             "", *findings(results), "", "## Headline: one row per run", "",
             *markdown_table(["run", "stands in for", "metric", "paper", "reproduced", "difference", "status"], head),
             "", "## Detail", "", *markdown_table(["run", *detail_labels], detail), "", "## Provenance", "",
             *markdown_table(["run", "device", "commit", "params hash", "date", "command"], prov), "",
             f"Paper column: {SOURCE}. A dash means no number (not in the paper, or not run). Test accuracy is "
             "`hrm evaluate`'s (ARC: pass@2 with voting); best test accuracy is the best of training's test "
             "passes (puzzles: exact accuracy, no voting). Mode `faithful` reproduces the author code's quirks "
             "(REFERENCE I.5), `corrected` fixes them. The long form with provenance on every row: summary.csv."]
    return "\n".join(lines) + "\n"


def _headline_cells(r: RunResult, rows: list[dict[str, Any]]) -> list[Any]:
    label = r.headline()[0]
    row = next(x for x in rows if x["experiment"] == r.exp.name and x["seed"] == r.seed and x["metric"] == label)
    return [label, row["paper"], row["reproduced"], row["difference"], row["status"]]


def report(params: Params, group: str) -> list[Path]:
    results = collect(params, group)
    if not results:
        raise DataError(f"no experiments in group {group!r} in {params.path}")
    rows = long_rows(results)
    frame = pl.DataFrame(rows, schema={c: pl.Float64 if c in ("paper", "reproduced", "difference") else
                                       (pl.Int64 if c == "seed" else pl.Utf8) for c in COLUMNS})
    md, csv = paths.table_files(group)
    write_text(csv, frame.write_csv())
    write_text(md, markdown(results, rows, group))
    done = frame.filter(pl.col("status") == "complete")["experiment"].n_unique()
    log.info("%s: %d rows, %d experiments complete -> %s, %s", group, len(frame), done, md, csv)
    return [md, csv]
