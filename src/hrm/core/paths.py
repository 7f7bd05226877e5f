"""Every path the pipeline reads or writes, spelled once.

The templates (with `{wildcards}`) are what the Snakemake rules use; the functions fill them for
the CLI and for `stages.py`, so DVC, Snakemake and `python -m hrm` agree by construction. All paths
are relative to the project root (the working directory of every stage).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Downloads and built arrays: DVC-cached, git-ignored.
RAW_DIR = "data/raw/{dataset}"
BUILT_DIR = "data/built/{dataset}"

# One folder per run. {root} is results/ for the paper (committed) and results/demo/ for the
# demo (git-ignored). In it the audited files (cache: false) sit beside the final model (DVC-cached,
# git-ignored) and the epoch checkpoint (never a DVC output: it changes every epoch).
GROUP_ROOTS = {"paper": "results", "demo": "results/demo", "analysis": "results/analyses"}
RUN_DIR = "{root}/runs/{experiment}/seed{seed}"
MODEL = RUN_DIR + "/model.pt"
CHECKPOINT = RUN_DIR + "/checkpoint.pt"
METRICS = RUN_DIR + "/metrics.json"
HISTORY = RUN_DIR + "/history.csv"
STEPS = RUN_DIR + "/steps.csv"
FINGERPRINT = RUN_DIR + "/fingerprint.json"     # what the run's computation gives on a probe (train's key)
EVAL = RUN_DIR + "/eval.json"
PREDICTIONS = RUN_DIR + "/predictions.json"     # puzzle runs: ARC Kaggle submission, or failed examples
FIGURE = RUN_DIR + "/{figure}.png"
PLOT_DATA = RUN_DIR + "/{plot}.csv"             # data series `evaluate` writes for `dvc plots`
TABLE = "{root}/tables/{table}.{ext}"
# `hrm analyze KIND`: a JSON and a figure per (kind, run); the report's figures across runs per group.
ANALYSIS = RUN_DIR + "/analysis/{analysis}.json"
ANALYSIS_FIGURE = RUN_DIR + "/analysis/{analysis}.png"
GROUP_FIGURES = "{root}/figures"
AUDIT = "{root}/README.md"                       # the reader's audit page (hrm.report.audit)
STALE = "{root}/stale.json"                      # runs the code here would compute differently (hrm relock --stale)

# GPU slots of one machine (hrm.runtime.launch): a lock file per GPU, shared by every checkout of one user, so
# that concurrent Snakemake jobs each hold their own GPUs. $HRM_GPU_SLOT_DIR moves it (tests do).
def gpu_slot_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"hrm-gpu-slots-{os.getuid()}"
    return Path(os.environ.get("HRM_GPU_SLOT_DIR", default))


# Benchmarks kept as measurements (`hrm bench ... --save`): JSON with provenance, and figures. Committed.
BENCH = "results/bench/{name}.{ext}"

# Logs of Snakemake jobs (DVC prints to the terminal). They carry the rule's wildcards.
DATA_LOG = "logs/{verb}/{dataset}.log"
RUN_LOG = RUN_DIR + "/{verb}.log"
GROUP_LOG = "{root}/{verb}.log"

TABLES = ("summary", "analyses")
TABLE_EXTS = ("md", "csv")
FIGURES = ("loss", "accuracy", "confusion", "errors")
PUZZLE_FIGURES = ("loss", "accuracy", "scaling", "boards")
PLOT_DATA_FILES = ("test_predictions",)         # image runs: true and predicted label per test example
PUZZLE_PLOT_DATA_FILES = ("segments", "pass_at_k")   # puzzle runs: scores per segment count and per K


def bench_file(name: str, ext: str = "json") -> Path:
    return Path(BENCH.format(name=name, ext=ext))


def stale_file(group: str) -> Path:
    return Path(STALE.format(root=group_root(group)))


def audit_file(group: str) -> Path:
    return Path(AUDIT.format(root=group_root(group)))


def raw_dir(dataset: str) -> Path:
    return Path(RAW_DIR.format(dataset=dataset))


def built_dir(dataset: str) -> Path:
    return Path(BUILT_DIR.format(dataset=dataset))


def group_root(group: str) -> str:
    return GROUP_ROOTS[group]


def _result(template: str, group: str, experiment: str, seed: int) -> Path:
    return Path(template.format(root=group_root(group), experiment=experiment, seed=seed))


def run_dir(group: str, experiment: str, seed: int) -> Path:
    return _result(RUN_DIR, group, experiment, seed)


def model_file(group: str, experiment: str, seed: int) -> Path:
    return _result(MODEL, group, experiment, seed)


def checkpoint_file(group: str, experiment: str, seed: int) -> Path:
    return _result(CHECKPOINT, group, experiment, seed)


def metrics_file(group: str, experiment: str, seed: int) -> Path:
    return _result(METRICS, group, experiment, seed)


def history_file(group: str, experiment: str, seed: int) -> Path:
    return _result(HISTORY, group, experiment, seed)


def steps_file(group: str, experiment: str, seed: int) -> Path:
    return _result(STEPS, group, experiment, seed)


def fingerprint_file(group: str, experiment: str, seed: int) -> Path:
    return _result(FINGERPRINT, group, experiment, seed)


def eval_file(group: str, experiment: str, seed: int) -> Path:
    return _result(EVAL, group, experiment, seed)


def table_files(group: str, table: str = "summary") -> list[Path]:
    """[Markdown, CSV] of one of a group's tables (`TABLES`)."""
    return [Path(TABLE.format(root=group_root(group), table=table, ext=e)) for e in TABLE_EXTS]


def predictions_file(group: str, experiment: str, seed: int) -> Path:
    return _result(PREDICTIONS, group, experiment, seed)


def figure_file(group: str, experiment: str, seed: int, figure: str) -> Path:
    return Path(FIGURE.format(root=group_root(group), experiment=experiment, seed=seed, figure=figure))


def plot_data_file(group: str, experiment: str, seed: int, plot: str) -> Path:
    return Path(PLOT_DATA.format(root=group_root(group), experiment=experiment, seed=seed, plot=plot))


def figure_files(group: str, experiment: str, seed: int) -> dict[str, Path]:
    return {f: figure_file(group, experiment, seed, f) for f in FIGURES}


def analysis_file(group: str, experiment: str, seed: int, analysis: str) -> Path:
    return Path(ANALYSIS.format(root=group_root(group), experiment=experiment, seed=seed, analysis=analysis))


def analysis_figure(group: str, experiment: str, seed: int, analysis: str) -> Path:
    return Path(ANALYSIS_FIGURE.format(root=group_root(group), experiment=experiment, seed=seed, analysis=analysis))


def group_figures(group: str) -> Path:
    return Path(GROUP_FIGURES.format(root=group_root(group)))


def analysis_log(group: str, experiment: str, seed: int, analysis: str) -> Path:
    return run_log(f"analyze-{analysis}", group, experiment, seed)


def data_log(verb: str, dataset: str) -> Path:
    return Path(DATA_LOG.format(verb=verb, dataset=dataset))


def run_log(verb: str, group: str, experiment: str, seed: int) -> Path:
    return Path(RUN_LOG.format(verb=verb, root=group_root(group), experiment=experiment, seed=seed))


def group_log(verb: str, group: str) -> Path:
    return Path(GROUP_LOG.format(verb=verb, root=group_root(group)))


def group_of_root(root: str) -> str:
    return {r: g for g, r in GROUP_ROOTS.items()}[root]



def group_of_output(path: str) -> str | None:
    """Which group's root holds `path` (the longest matching root wins: results/demo is not paper)."""
    roots = sorted(GROUP_ROOTS.items(), key=lambda kv: -len(kv[1]))
    return next((g for g, r in roots if path.startswith(r + "/")), None)
