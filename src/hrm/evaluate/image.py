"""`hrm evaluate` for the image study: test accuracy, per-class accuracy, confusion matrix, figures.

The test pass is `hrm.evaluate.image_pass.predict`, the same one training runs after every epoch,
so both report the same number.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from hrm.core import paths, provenance
from hrm.core.atomic import together, write_json
from hrm.core.gpu import resolve_device
from hrm.core.locks import holding_run_lock
from hrm.core.progress import Progress
from hrm.data import build as built
from hrm.evaluate import figures
from hrm.evaluate.image_pass import Normalizer, predict
from hrm.evaluate.load import load_run
from hrm.pipeline import studies
from hrm.pipeline.config import Params

log = logging.getLogger("hrm")
MISCLASSIFIED_KEPT = 32   # the study's error grid shows 32 images


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)


@holding_run_lock
@together
def evaluate(params: Params, name: str, seed: int) -> Path:
    exp = params.experiment(name)
    device = resolve_device(params.runtime.device)
    data = built.load(exp.dataset)
    run = load_run(params, exp, seed, studies.shape(exp.dataset), device)
    model = run.model
    x = torch.from_numpy(np.array(data.test_x)).to(device)
    batch = exp.recipe.eval_batch_size
    with Progress(-(-len(x) // batch), f"{name} s{seed} evaluate", "batches") as bar:
        pred = predict(model, x, Normalizer(data, device), batch, lambda: run.amp,
                       bar.advance).cpu().numpy()
    y = np.asarray(data.test_y)
    classes = studies.shape(exp.dataset).classes
    matrix = confusion(y, pred, classes)
    support = matrix.sum(axis=1)
    per_class = np.divide(np.diag(matrix), support, out=np.zeros(classes), where=support > 0)
    wrong = np.flatnonzero(pred != y)
    result = {
        "experiment": name, "seed": seed, "dataset": exp.dataset, "test_size": int(len(y)),
        "test_acc": float((pred == y).mean()), "per_class_acc": [round(float(a), 6) for a in per_class],
        "label_names": list(data.label_names), "confusion": matrix.tolist(),
        "misclassified": [{"index": int(i), "true": int(y[i]), "pred": int(pred[i])}
                          for i in wrong[:MISCLASSIFIED_KEPT]],
        "provenance": provenance.record(exp.params_hash()),
    }
    out = paths.eval_file(exp.group, name, seed)
    names = list(data.label_names)
    # One row per test example, so DVC's confusion template can count them (`dvc plots show`).
    figures.write_series(paths.plot_data_file(exp.group, name, seed, "test_predictions"), ["actual", "predicted"],
                         [[names[t], names[p]] for t, p in zip(y.tolist(), pred.tolist())])
    write_json(out, result)
    draw_figures(exp.group, name, seed, data, result)
    log.info("%s seed %d: test accuracy %.4f (%d/%d) -> %s", name, seed, result["test_acc"],
             int((pred == y).sum()), len(y), out)
    return out


def draw_figures(group: str, name: str, seed: int, data: built.ImageData, result: dict) -> None:
    """The four per-run figures, from the training traces and this evaluation."""
    out = paths.figure_files(group, name, seed)
    title = f"{name} seed {seed}"
    steps = figures.read_trace(paths.steps_file(group, name, seed), {"step": int, "loss": float})
    figures.loss_trace(np.array([r["step"] for r in steps]), np.array([r["loss"] for r in steps]),
                       title, out["loss"])
    history = figures.read_trace(paths.history_file(group, name, seed),
                                 {"epoch": int, "train_acc": float, "test_acc": float})
    figures.accuracy_curves(history, title, out["accuracy"])
    figures.confusion_matrix(np.array(result["confusion"]), result["label_names"], title, out["confusion"])
    wrong = result["misclassified"]
    images = np.asarray(data.test_x[[w["index"] for w in wrong]]) if wrong else np.zeros((0, 1, 1, 1), np.uint8)
    figures.error_grid(images, [w["true"] for w in wrong], [w["pred"] for w in wrong], result["label_names"],
                       title, out["errors"])
