"""`hrm evaluate` for the reasoning study: scores at several M_max, ARC voting, predictions, figures.

Writes eval.json (exact and token accuracy for every segment count in
`recipes.<r>.eval_halt_steps` plus the trained M_max; for ARC also pass@1/2/10/100/1000, strict
and with partial credit, from `hrm.evaluate.voting`), predictions.json (ARC: Kaggle's submission
format, two attempts per test input; Sudoku and mazes: the first failed test examples), and the
loss, accuracy and scaling figures. Votes come from this checkpoint only, unless the recipe asks for
TRM's pooled voting (`pooled_scores`).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm.core import paths, provenance
from hrm.core.atomic import together, write_json
from hrm.core.errors import DataError
from hrm.core.gpu import resolve_device
from hrm.core.locks import holding_run_lock
from hrm.core.progress import Progress
from hrm.data.puzzles import stream
from hrm.evaluate import boards, figures
from hrm.evaluate.load import load_run
from hrm.evaluate.puzzle_pass import predict_segments, score_puzzles
from hrm.evaluate.voting import HEADLINE_K, Votes, arc_scores, arc_votes, submission
from hrm.pipeline import studies
from hrm.pipeline.config import Experiment, Params, PuzzleRecipe

log = logging.getLogger("hrm")
FAILED_KEPT = 32
NO_TRAINING = "metrics.json names the source"


def pooled_scores(payload: dict[str, Any], answers: list[list[np.ndarray]], name: str, seed: int) -> dict[str, Any]:
    """TRM's aggregated voting (recipe `pooled_voting`): pass@K of the votes the training pooled over its
    evaluations (saved in model.pt), as the headline, labelled; the per-checkpoint scores stay beside it."""
    if "pooled_votes" not in payload:
        raise DataError(f"{name} seed {seed}: the recipe asks for pooled voting but model.pt holds no pooled votes "
                        f"(trained before the switch was set); retrain: hrm train {name} --seed {seed}")
    pooled = arc_scores(Votes.from_arrays({k: v.numpy() for k, v in payload["pooled_votes"].items()}), answers)
    n = int(payload["pooled_evaluations"])
    return {**{f"pooled_{k}": v for k, v in pooled.items()}, "headline": pooled[f"pass@{HEADLINE_K}"],
            "headline_name": f"pooled pass@{HEADLINE_K} (TRM's aggregated voting over the run's {n} evaluations)"}


@holding_run_lock
@together
def evaluate(params: Params, name: str, seed: int) -> Path:
    exp = params.experiment(name)
    assert isinstance(exp.recipe, PuzzleRecipe)
    device = resolve_device(params.runtime.device)
    data = stream.load(exp.dataset)
    run = load_run(params, exp, seed, studies.shape(exp.dataset, data.num_ids), device)
    model, precision, payload, amp = run.model, run.precision, run.payload, run.amp
    trained = exp.model.halt_max_steps
    # Scaling is scored for recurrent models; the direct baseline's segments would all repeat the first.
    recurrent = getattr(exp.model, "recurrent", True)
    segments = sorted(set(exp.recipe.eval_halt_steps) | {trained}) if recurrent else [trained]
    votes, single, each = arc_votes(data, segments) if data.tasks is not None else ({}, {}, None)
    # ARC: task names and their test answers (original space), in the order of the task indices.
    names = list(data.tasks["answers"]) if data.tasks is not None else []
    answers = [[np.array(a, np.uint8) for a in data.tasks["answers"][n]] for n in names] if names else []
    batch, n = exp.recipe.eval_batch_size, len(data.test.inputs)
    with Progress(n, f"{name} s{seed} evaluate", "examples") as bar:
        scores = score_puzzles(model, data.test, batch, device, amp, segments, each, bar.advance)
    by_segments: dict[str, dict[str, Any]] = {}
    for m, r in scores.items():
        if data.tasks is not None:
            r = r | arc_scores(votes[m], answers) | {"headline_name": f"pass@{HEADLINE_K}",
                                                     "one_view_pass@1": arc_scores(single[m], answers)["pass@1"]}
            r["headline"] = r[f"pass@{HEADLINE_K}"]
        else:
            r = r | {"headline": r["exact_acc"], "headline_name": "exact_acc"}
        by_segments[str(m)] = r
    if data.tasks is not None and exp.recipe.pooled_voting:
        by_segments[str(trained)] |= pooled_scores(payload, answers, name, seed)
    head = by_segments[str(trained)]
    result = {"experiment": name, "seed": seed, "dataset": exp.dataset, "test_examples": len(data.test.inputs),
              "trained_halt_max_steps": trained, "headline_name": head["headline_name"],
              "test_acc": head["headline"], "by_segments": by_segments,
              "precision": precision if device.type == "cuda" else "fp32 (CPU)",
              "provenance": provenance.record(exp.params_hash())}
    g = exp.group
    if data.tasks is not None:
        write_json(paths.predictions_file(g, name, seed), submission(votes[trained], names, answers))
    else:
        write_json(paths.predictions_file(g, name, seed), failed_examples(model, data, exp, device, amp))
    out = paths.eval_file(g, name, seed)
    write_plot_data(g, name, seed, result)
    write_json(out, result)
    draw_figures(g, name, seed, result)
    board_file, title = paths.figure_file(g, name, seed, "boards"), f"{name} seed {seed}"
    if data.tasks is not None:
        voted = [(votes[trained].ranked(i, 0) or [None])[0] for i in range(len(names))]
        boards.arc_answers([(n, np.array(data.tasks["inputs"][n][0]), v, a[0])
                            for n, v, a in zip(names, voted, answers)], title + ": first test input of each "
                           "evaluation task", board_file)
    else:
        draw_segments(model, data, segments, device, amp, title, board_file)
    log.info("%s seed %d: test %s %.4f at M_max=%d; by segments: %s", name, seed, head["headline_name"],
             head["headline"], trained, {m: round(s["headline"], 4) for m, s in by_segments.items()})
    return out


@torch.no_grad()
def failed_examples(model: torch.nn.Module, data: stream.PuzzleData, exp: Experiment, device: torch.device,
                    amp: AbstractContextManager) -> dict:
    """The first test examples the model gets wrong at M_max (token strings), for the audit."""
    split, failed = data.test, []
    puzzle_of = stream.example_puzzles(split)
    batch = exp.recipe.eval_batch_size
    for start in range(0, len(split.inputs), batch):
        idx = np.arange(start, min(len(split.inputs), start + batch))
        _, pred, _, _ = next(iter(predict_segments(model, split, idx, puzzle_of, device, amp,
                                                   {exp.model.halt_max_steps})))
        pred = pred.cpu().numpy()
        wrong = np.flatnonzero((pred != np.asarray(split.labels[idx])).any(axis=1))
        failed += [{"index": int(idx[j]), "input": np.asarray(split.inputs[idx[j]]).tolist(),
                    "label": np.asarray(split.labels[idx[j]]).tolist(), "prediction": pred[j].tolist()}
                   for j in wrong[:FAILED_KEPT - len(failed)]]
        if len(failed) >= FAILED_KEPT:
            break
    return {"note": "token ids (see the data set's dataset.json); the first failures at M_max", "failed": failed}


@torch.no_grad()
def draw_segments(model: torch.nn.Module, data: stream.PuzzleData, segments: list[int], device: torch.device,
                  amp: AbstractContextManager, title: str, path: Path) -> None:
    """The answer after each segment for one test puzzle: the first whose answer changes between the
    first and the last segment (the refinement the figure is for), else the first test puzzle."""
    split, last = data.test, max(segments)
    n = min(len(split.inputs), 256)
    idx = np.arange(n)
    preds = {m: p.cpu().numpy() for m, p, _, _ in predict_segments(model, split, idx, stream.example_puzzles(split),
                                                                 device, amp, set(range(1, last + 1)))}
    changed = np.flatnonzero((preds[1] != preds[last]).any(axis=1))
    j = int(changed[0]) if len(changed) else 0
    which = "first test puzzle whose answer changes across segments" if len(changed) else "first test puzzle"
    boards.segment_boards(str(data.info.get("kind")), np.asarray(split.inputs[j]),
                          [preds[m][j] for m in range(1, last + 1)], np.asarray(split.labels[j]),
                          f"{title}: test puzzle {j} ({which})", path, studies.ALL_DATASETS[data.name].box)


def write_plot_data(group: str, name: str, seed: int, result: dict) -> None:
    """segments.csv (every score at each segment count) and pass_at_k.csv (at the trained M_max:
    pass@K and its partial-credit form for ARC; without voting one answer, so K = 1 = exact accuracy)."""
    by = result["by_segments"]
    order = sorted(by, key=int)
    columns = [k for k, v in by[order[0]].items() if isinstance(v, float | int)]
    figures.write_series(paths.plot_data_file(group, name, seed, "segments"), ["segments", *columns],
                         [[int(m), *(by[m][c] for c in columns)] for m in order])
    head = by[str(result["trained_halt_max_steps"])]
    ks = sorted(int(k.split("@")[1]) for k in head if k.startswith("pass@"))
    rows = [[k, head[f"pass@{k}"], head[f"partial_pass@{k}"]] for k in ks] or \
        [[1, head["exact_acc"], head["exact_acc"]]]
    figures.write_series(paths.plot_data_file(group, name, seed, "pass_at_k"), ["k", "pass", "partial_pass"], rows)


def draw_figures(group: str, name: str, seed: int, result: dict) -> None:
    out = {f: paths.figure_file(group, name, seed, f) for f in ("loss", "accuracy", "scaling")}
    title = f"{name} seed {seed}"
    steps = figures.read_trace(paths.steps_file(group, name, seed), {"step": int, "loss": float}, empty=True)
    history = figures.read_trace(paths.history_file(group, name, seed),
                                 {"step": int, "train_acc": float, "test_acc": float}, empty=True)
    if not steps:                  # an imported checkpoint (hrm.train.released): no step was taken here
        for f in ("loss", "accuracy"):
            figures.note(f"no training in this run: its weights were imported\n({NO_TRAINING})", title, out[f])
    else:
        figures.loss_trace(np.array([r["step"] for r in steps]), np.array([r["loss"] for r in steps]), title,
                           out["loss"])
        figures.accuracy_curves([{**r, "epoch": r["step"]} for r in history], title + " (x: optimizer step)",
                                out["accuracy"])
    by = result["by_segments"]
    m = sorted(int(k) for k in by)
    figures.scaling_curve(m, [by[str(k)]["headline"] for k in m], result["headline_name"],
                          result["trained_halt_max_steps"], title, out["scaling"])
