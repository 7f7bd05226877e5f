"""`hrm evaluate` for the reasoning study: scores at several M_max, voting, Kaggle JSON, figures.

Writes eval.json (exact and token accuracy for every segment count in
`recipes.<r>.eval_halt_steps` plus the trained M_max; for ARC also pass@1/2/10/100/1000, strict
and with partial credit), submission.json for ARC (two attempts per test input, Kaggle's format),
and the loss, accuracy and scaling figures. Votes come from this checkpoint only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from hrm import figures, paths, provenance
from hrm.atomic import write_json
from hrm.config import Params
from hrm.evaluate import _read_csv, load_weights
from hrm.gpu import autocast, resolve_device
from hrm.puzzles import data as pdata
from hrm.puzzles.score import Votes, predict_segments, score_test, submission
from hrm.puzzles.train import build

log = logging.getLogger("hrm")
FAILED_KEPT = 32


def load_model(params: Params, name: str, seed: int, data: pdata.PuzzleData, device: torch.device) -> torch.nn.Module:
    exp = params.experiment(name)
    return load_weights(params, name, seed, lambda: build(exp, data, seed, torch.device("cpu")), device)


def evaluate(params: Params, name: str, seed: int) -> Path:
    exp = params.experiment(name)
    device = resolve_device(params.runtime.device)
    data = pdata.load(exp.dataset)
    model = load_model(params, name, seed, data, device)
    trained = exp.model.halt_max_steps
    segments = sorted(set(exp.recipe.eval_halt_steps) | {trained})
    votes: dict[int, Votes] = {}
    scores = score_test(model, data, exp.recipe.eval_batch_size, device, autocast(device, params.runtime.precision),
                        segments, votes)
    head = scores[str(trained)]
    result = {"experiment": name, "seed": seed, "dataset": exp.dataset, "test_examples": len(data.test.inputs),
              "trained_halt_max_steps": trained, "headline_name": head["headline_name"],
              "test_acc": head["headline"], "by_segments": scores,
              "provenance": provenance.record(exp.params_hash())}
    g = exp.group
    if data.tasks is not None:
        names = list(data.tasks["answers"])
        answers = [[np.array(a, np.uint8) for a in data.tasks["answers"][n]] for n in names]
        write_json(paths.predictions_file(g, name, seed), submission(votes[trained], names, answers))
    else:
        write_json(paths.predictions_file(g, name, seed), failed_examples(model, data, exp, device, params))
    out = paths.eval_file(g, name, seed)
    write_json(out, result)
    draw_figures(g, name, seed, result)
    log.info("%s seed %d: test %s %.4f at M_max=%d; by segments: %s", name, seed, head["headline_name"],
             head["headline"], trained, {m: round(s["headline"], 4) for m, s in scores.items()})
    return out


@torch.no_grad()
def failed_examples(model: torch.nn.Module, data: pdata.PuzzleData, exp, device: torch.device,
                    params: Params) -> dict:
    """The first test examples the model gets wrong at M_max (token strings), for the audit."""
    split, failed = data.test, []
    puzzle_of = pdata.example_puzzles(split)
    for start in range(0, len(split.inputs), exp.recipe.eval_batch_size):
        idx = np.arange(start, min(len(split.inputs), start + exp.recipe.eval_batch_size))
        _, pred, _, _ = next(iter(predict_segments(model, split, idx, puzzle_of, device,
                                           autocast(device, params.runtime.precision), {exp.model.halt_max_steps})))
        pred = pred.cpu().numpy()
        wrong = np.flatnonzero((pred != np.asarray(split.labels[idx])).any(axis=1))
        failed += [{"index": int(idx[j]), "input": np.asarray(split.inputs[idx[j]]).tolist(),
                    "label": np.asarray(split.labels[idx[j]]).tolist(), "prediction": pred[j].tolist()}
                   for j in wrong[:FAILED_KEPT - len(failed)]]
        if len(failed) >= FAILED_KEPT:
            break
    return {"note": "token ids (see the data set's dataset.json); the first failures at M_max", "failed": failed}


def draw_figures(group: str, name: str, seed: int, result: dict) -> None:
    out = {f: paths.figure_file(group, name, seed, f) for f in paths.PUZZLE_FIGURES}
    title = f"{name} seed {seed}"
    steps = _read_csv(paths.steps_file(group, name, seed), {"step": int, "loss": float})
    figures.loss_trace(np.array([r["step"] for r in steps]), np.array([r["loss"] for r in steps]), title, out["loss"])
    history = _read_csv(paths.history_file(group, name, seed), {"step": int, "train_acc": float, "test_acc": float})
    figures.accuracy_curves([{**r, "epoch": r["step"]} for r in history], title + " (x: optimizer step)",
                            out["accuracy"])
    by = result["by_segments"]
    m = sorted(int(k) for k in by)
    figures.scaling_curve(m, [by[str(k)]["headline"] for k in m], result["headline_name"],
                          result["trained_halt_max_steps"], title, out["scaling"])
