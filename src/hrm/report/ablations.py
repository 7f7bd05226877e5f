"""The analyses table of a group (`tables/analyses.{md,csv}`) and its figures (`figures/`).

Analyses (`hrm analyze`): the participation ratio beside the paper's, and accuracy per segment with
the halting steps. Ablations: experiments carrying an `ablations` label are tabulated by family
(depth, supervision, arc-augmentations, image, trm) with the setting that varies, read from their
configs, and drawn. Numbers come from run files only; the paper's from hrm.report.paper. A run not yet
made is "not run"; every table of a group other than paper says "demo scale".
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from hrm.core import paths  # noqa: E402
from hrm.core.atomic import atomic_dir, write_text  # noqa: E402
from hrm.core.errors import DataError  # noqa: E402
from hrm.models.registry import MODELS, effective_depth  # noqa: E402
from hrm.pipeline.config import ABLATIONS, Experiment, Params  # noqa: E402
from hrm.pipeline.studies import ALL_DATASETS  # noqa: E402
from hrm.report.paper import CLAIMS, PR_PAPER, TRM_SWITCHES  # noqa: E402
from hrm.report.tables import RunResult, collect, markdown_table, run_status  # noqa: E402

BASELINE = "none (the paper's model and recipe)"
CSV_COLUMNS = ("section", "experiment", "seed", "setting", "metric", "value", "status", "commit", "date")


def read_analysis(group: str, exp: Experiment, seed: int, kind: str) -> dict[str, Any] | None:
    path = paths.analysis_file(group, exp.name, seed, kind)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable analysis ({exc}); run `hrm analyze {kind} {exp.name} --seed {seed}` "
                        "again") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: holds {type(value).__name__}, expected an object")
    return value


def switches(obj: Any) -> dict[str, Any]:
    """The ablation switches of a config that are away from the paper's setting."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if f.metadata.get("ablation") and getattr(obj, f.name) != f.default}


def changes(e: Experiment) -> str:
    """The model's and recipe's switches away from the paper setting of the model's kind, as text.
    EMA counts as on or off: TRM's recipe has one (its rate scaled to a demo's length), HRM's none."""
    found = {**switches(e.model), **switches(e.recipe)}
    found.pop("ema", None)
    ema = getattr(e.recipe, "ema", 0.0)          # puzzle recipes only
    if (ema > 0) != MODELS[e.model.kind].ema:
        found["ema"] = ema or "off"
    return ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in found.items())


def depth_family(exp: Experiment) -> str:
    """The model's label, a transformer stack applied several times with shared weights marked recurrent."""
    label = MODELS[exp.model.kind].label
    return f"recurrent {label}" if getattr(exp.model, "repeats", 1) > 1 else label


@dataclasses.dataclass(frozen=True)
class Family:
    """An ablation family (the `ablations` labels of params.yaml, hrm.pipeline.config.ABLATIONS): how the
    report tabulates and draws its runs. The paper's claim for it is hrm.report.paper.CLAIMS[name]."""

    title: str
    axis: str                                        # what varies across its runs
    x_of: Callable[[Experiment], Any]
    series_of: Callable[[Experiment], str]
    columns: tuple[str, ...] = ()                    # extra table columns (keys of a row, see family_rows)
    bars: bool = False                               # one bar per setting, each model's baseline first
    log_x: bool = False


FAMILIES: dict[str, Family] = {
    "depth": Family("Depth scaling (REFERENCE II.5)", "effective depth (blocks per segment)",
                    lambda e: effective_depth(e.model), depth_family),
    "supervision": Family("Deep supervision: segments trained (II.6)", "segments trained (M_max)",
                          lambda e: getattr(e.model, "halt_max_steps", 1), lambda e: e.model.kind),
    "arc-augmentations": Family("ARC augmentations at build time, voting on and off (II.6)",
                                "augmented versions per task", lambda e: ALL_DATASETS[e.dataset].augmentations,
                                lambda e: "HRM", columns=("one view", "voted pass@1"), log_x=True),
    "image": Family("The image study's follow-ups (I.7)", "change from the paper's setting",
                    lambda e: changes(e) or BASELINE, lambda e: e.model.kind, bars=True),
    "trm": Family("TRM's design choices as switches, on Sudoku, for TRM and HRM (V.4)",
                  "change from the model's paper setting", lambda e: changes(e) or BASELINE,
                  lambda e: MODELS[e.model.kind].label, columns=("paper",), bars=True),
}
COLUMN_LABELS = {"one view": "pass@1, one view, no voting (%)", "voted pass@1": "pass@1, voted (%)",
                 "paper": "TRM paper, Sudoku-Extreme (%)"}



def _score(r: RunResult) -> float | None:
    return r.headline()[1] if r.metrics is not None else None


def _pct(value: Any) -> float | None:
    return None if not isinstance(value, int | float) else round(100 * float(value), 2)


def family_rows(results: list[RunResult], family: str) -> list[dict[str, Any]]:
    f = FAMILIES[family]
    rows = []
    for r in results:
        if family not in r.exp.ablations:
            continue
        row = {"run": r.name, "series": f.series_of(r.exp), "x": f.x_of(r.exp), "metric": r.headline()[0],
               "value": _score(r), "status": run_status(r.metrics), "result": r}
        if "one view" in f.columns:
            a = r.at_trained
            row["one view"] = _pct(a.get("one_view_pass@1"))
            row["voted pass@1"] = _pct(a.get("pass@1"))
        if "paper" in f.columns:
            change = "" if row["x"] == BASELINE else row["x"]
            row["paper"] = TRM_SWITCHES.get(change) if row["series"] == "TRM" else None
        rows.append(row)
    if f.bars:                         # each model's baseline first, then its variants
        return sorted(rows, key=lambda x: (x["series"], x["x"] != BASELINE, x["x"]))
    return sorted(rows, key=lambda x: (x["series"], x["x"]))


def analysed(group: str, results: list[RunResult], kind: str) -> list[tuple[RunResult, dict[str, Any] | None]]:
    """Every run whose experiment asks for `kind`, with its analysis (None before `hrm analyze`)."""
    return [(r, read_analysis(group, r.exp, r.seed, kind)) for r in results if kind in r.exp.analyses]


def pr_rows(group: str, results: list[RunResult]) -> list[tuple[RunResult, list[Any]]]:
    """(run, cells): D, then z_H, z_L and their ratio trained, the same untrained, then what was measured."""
    out = []
    for r, a in analysed(group, results, "pr"):
        if a is None:
            out.append((r, [r.exp.model.hidden, *[None] * 6, "not run"]))
            continue
        t, u = a["trained"], a["untrained"]
        out.append((r, [a["dimension"], t["z_H"]["pr"], t["z_L"]["pr"], t["ratio"], u["z_H"]["pr"], u["z_L"]["pr"],
                        u["ratio"], f"{a['examples']} test examples x {a['tokens_per_example']} tokens"]))
    return out


def segment_rows(group: str, results: list[RunResult]) -> list[list[Any]]:
    out = []
    for r, a in analysed(group, results, "segments"):
        if a is None:
            out.append([r.name, None, None, None, None, "not run"])
            continue
        curve = ", ".join(f"{m}: {100 * v:.1f}" for m, v in zip(a["segments"], a["accuracy"]))
        h = a.get("halting") or {}
        out.append([r.name, a["metric"], curve, h.get("mean_steps"), _pct(h.get("accuracy_at_halt")),
                    " / ".join(str(n) for n in h.get("histogram", [])) or "— (no Q head)"])
    return out


def save(fig: plt.Figure, path: Path) -> None:
    """Into the figures folder being written (atomic as a whole: `atomic_dir`); the report stays
    independent of the per-run figure code of hrm.evaluate."""
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def draw_family(family: str, rows: list[dict[str, Any]], scale: str, path: Path) -> None:
    f = FAMILIES[family]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if f.bars:
        done = [r for r in rows if r["value"] is not None]
        names = [f"{r['series']}\n{r['x']}" for r in done]
        ax.barh(range(len(done)), [r["value"] for r in done])
        ax.set_yticks(range(len(done)), names, fontsize=6)
        ax.set(xlabel=f"test score (%): {rows[0]['metric']}")
    else:
        for series in dict.fromkeys(r["series"] for r in rows):
            pts = [(r["x"], r["value"]) for r in rows if r["series"] == series and r["value"] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{series} ({rows[0]['metric']})")
        if "one view" in f.columns:
            pts = [(r["x"], r["one view"]) for r in rows if r.get("one view") is not None]
            if pts:
                ax.plot(*zip(*pts), marker="s", ls=":", label=COLUMN_LABELS["one view"])
        if f.log_x:
            ax.set_xscale("log")
        ax.set(xlabel=f.axis, ylabel="test score (%)")
        ax.legend(fontsize=7)
    ax.set_title(f"{f.title} ({scale})", fontsize=9)
    ax.grid(alpha=0.3)
    save(fig, path)


def draw_pr(group: str, results: list[RunResult], scale: str, path: Path) -> bool:
    done = [(r, a) for r, a in analysed(group, results, "pr") if a is not None]
    if not done:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    labels, width = [r.name for r, _ in done] + [f"paper (D = {PR_PAPER['dimension']})"], 0.2
    bars = {"z_H trained": [a["trained"]["z_H"]["pr"] for _, a in done] + [PR_PAPER["z_H"]],
            "z_L trained": [a["trained"]["z_L"]["pr"] for _, a in done] + [PR_PAPER["z_L"]],
            "z_H untrained": [a["untrained"]["z_H"]["pr"] for _, a in done] + [float("nan")],
            "z_L untrained": [a["untrained"]["z_L"]["pr"] for _, a in done] + [float("nan")]}
    for i, (name, values) in enumerate(bars.items()):
        ax.bar([j + (i - 1.5) * width for j in range(len(labels))], values, width, label=name)
    ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=15)
    ax.set(ylabel="participation ratio", yscale="log", title=f"Participation ratio ({scale})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    save(fig, path)
    return True


def figure_index(folder: Path, group: str) -> None:
    """figures/README.md, the list of what was drawn: the folder is never empty, since git keeps no
    empty folder and a fresh clone would otherwise miss this (uncached) DVC output."""
    drawn = sorted(p.name for p in folder.glob("*.png"))
    write_text(folder / "README.md", f"# Figures of the analyses and ablations ({group})\n\n" + (
        "".join(f"* `{name}`\n" for name in drawn) if drawn else "None drawn: no run of this group has "
        "analyses or ablation labels with results yet.\n"))


def tables(params: Params, group: str) -> list[Path]:
    """Write tables/analyses.{md,csv} and figures/ of `group`."""
    results = collect(params, group)
    scale = "paper scale" if group == "paper" else "demo scale, not the paper's setting"
    md, csv = paths.table_files(group, "analyses")
    lines = [f"# Analyses and ablations ({group}: {scale})", "",
             "Written by `hrm report` from `hrm analyze` outputs (`runs/*/seed*/analysis/`) and the runs labelled "
             "with `ablations` in params.yaml; figures in `figures/`. A dash: no number (not run, or none).", ""]
    long: list[dict[str, Any]] = []
    if not any(r.exp.analyses or r.exp.ablations for r in results):
        with atomic_dir(paths.group_figures(group)) as folder:
            figure_index(folder, group)
        lines.append("No experiment of this group has analyses or ablation labels; `snakemake --cores 2 analyses` "
                     "runs them at demo scale (results/analyses/).")
        write_text(md, "\n".join(lines) + "\n")
        write_text(csv, pl.DataFrame([], schema=dict.fromkeys(CSV_COLUMNS, pl.Utf8)).write_csv())
        return [md, csv]
    pr = pr_rows(group, results)
    lines += ["## Participation ratio of z_H and z_L (REFERENCE II.5)", "",
              f"Paper (27M Sudoku HRM, D = {PR_PAPER['dimension']}): z_H {PR_PAPER['z_H']}, z_L {PR_PAPER['z_L']}, "
              f"ratio {PR_PAPER['ratio']}; the untrained network shows no separation.", ""]
    header = ["run", "D", "z_H", "z_L", "ratio", "z_H untrained", "z_L untrained", "ratio untrained", "states"]
    lines += (markdown_table(header, [[r.name, *cells] for r, cells in pr]) if pr
              else ["No run of this group has `analyses: [pr]`."])
    seg = segment_rows(group, results)
    lines += ["", "## Accuracy after each segment and halting (ACT)", ""]
    header = ["run", "metric", "accuracy (%) after segment m", "mean halting step", "accuracy at halt (%)",
              "halting-step histogram"]
    lines += markdown_table(header, seg) if seg else ["No run of this group has `analyses: [segments]`."]
    with atomic_dir(paths.group_figures(group)) as folder:
        if draw_pr(group, results, scale, folder / "pr.png"):
            lines += ["", "Figure: `figures/pr.png`; spectra per run: `runs/<run>/seed<s>/analysis/pr.png`."]
        for family in ABLATIONS:
            rows = family_rows(results, family)
            f = FAMILIES[family]
            lines += ["", f"## {f.title}", "", f"Paper: {CLAIMS[family]}.", ""]
            if not rows:
                lines.append("No experiment of this group carries this label.")
                continue
            lines += markdown_table(["run", "series", f.axis, "metric", "ours", *[COLUMN_LABELS[k] for k in f.columns],
                                     "status"], [[r["run"], r["series"], r["x"], r["metric"], r["value"],
                                                  *[r[k] for k in f.columns], r["status"]] for r in rows])
            if any(r["value"] is not None for r in rows):
                draw_family(family, rows, scale, folder / f"{family}.png")
                lines += ["", f"Figure: `figures/{family}.png`."]
            for r in rows:
                prov = ((r["result"].metrics or {}).get("provenance") or {})
                long.append({"section": family, "experiment": r["result"].exp.name, "seed": r["result"].seed,
                             "setting": str(r["x"]), "metric": r["metric"], "value": r["value"],
                             "status": r["status"], "commit": prov.get("commit"), "date": prov.get("date")})
        figure_index(folder, group)
    for r, cells in pr:
        prov = ((r.metrics or {}).get("provenance") or {})
        long += [{"section": "pr", "experiment": r.exp.name, "seed": r.seed, "setting": "trained" if i < 3
                  else "untrained", "metric": m, "value": v, "status": "not run" if v is None else "complete",
                  "commit": prov.get("commit"), "date": prov.get("date")}
                 for i, (m, v) in enumerate(zip(("z_H", "z_L", "ratio", "z_H", "z_L", "ratio"), cells[1:7]))]
    write_text(md, "\n".join(lines) + "\n")
    frame = pl.DataFrame(long, schema={c: pl.Float64 if c == "value" else (pl.Int64 if c == "seed" else pl.Utf8)
                                       for c in CSV_COLUMNS})
    write_text(csv, frame.write_csv())
    return [md, csv]

