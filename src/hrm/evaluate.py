"""`hrm evaluate EXPERIMENT --seed S`: test accuracy, per-class accuracy, confusion matrix.

Also holds the helpers training uses for its per-epoch test pass, so both report the same number.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch

from hrm import figures, paths, provenance
from hrm.atomic import write_json
from hrm.config import Params
from hrm.data import build as built
from hrm.data.sources import DATASETS
from hrm.errors import DataError
from hrm.gpu import autocast, resolve_device
from hrm.models.registry import build_model

log = logging.getLogger("hrm")
MISCLASSIFIED_KEPT = 32   # the study's error grid shows 32 images


class Normalizer:
    """uint8 images -> float, (x / pixel_max - mean) / std per channel, folded into one multiply-add."""

    def __init__(self, data: built.ImageData, device: torch.device) -> None:
        scale = 1.0 / (data.pixel_max * data.std.astype(np.float64))
        shift = -data.mean.astype(np.float64) / data.std.astype(np.float64)
        self.scale = torch.tensor(scale, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.shift = torch.tensor(shift, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.scale + self.shift


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, normalize: Normalizer, batch_size: int,
            autocast: Callable[[], AbstractContextManager] = nullcontext) -> torch.Tensor:
    """Class predictions for every row of `x`, in sequential batches, in eval mode."""
    was_training = model.training
    model.eval()
    with autocast():
        preds = [model(normalize(x[i:i + batch_size])).argmax(-1) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(preds)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)


def load_weights(params: Params, name: str, seed: int, build: Callable[[], torch.nn.Module],
                 device: torch.device) -> torch.nn.Module:
    """The run's model.pt into a model from `build`; a missing or damaged file is a DataError."""
    path = paths.model_file(params.experiment(name).group, name, seed)
    if not path.is_file():
        raise DataError(f"{path}: no trained model; run `hrm train {name} --seed {seed}` first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = build()
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # torch.load raises many types on damaged files
        raise DataError(f"{path}: not a model file for {name} with the current params "
                        f"({type(exc).__name__}: {str(exc)[:200]})") from None
    return model.to(device)


def load_model(params: Params, name: str, seed: int, device: torch.device) -> torch.nn.Module:
    exp = params.experiment(name)
    return load_weights(params, name, seed, lambda: build_model(exp.model, DATASETS[exp.dataset]), device)


def evaluate(params: Params, name: str, seed: int) -> Path:
    exp = params.experiment(name)
    device = resolve_device(params.runtime.device)
    data = built.load(exp.dataset)
    model = load_model(params, name, seed, device)
    x = torch.from_numpy(np.array(data.test_x)).to(device)
    pred = predict(model, x, Normalizer(data, device), exp.recipe.eval_batch_size,
                   partial(autocast, device, params.runtime.precision)).cpu().numpy()
    y = np.asarray(data.test_y)
    classes = DATASETS[exp.dataset].classes
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
    write_json(out, result)
    draw_figures(exp.group, name, seed, data, result)
    log.info("%s seed %d: test accuracy %.4f (%d/%d) -> %s", name, seed, result["test_acc"],
             int((pred == y).sum()), len(y), out)
    return out


def _read_csv(path: Path, columns: dict[str, type]) -> list[dict[str, float]]:
    """Rows of a training trace with the given numeric columns; anything else is a DataError."""
    try:
        with open(path, newline="") as fh:
            rows = [{c: kind(r[c]) for c, kind in columns.items()} for r in csv.DictReader(fh)]
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `hrm train` for this run first") from None
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: malformed training trace ({type(exc).__name__}: {exc}); "
                        f"run `hrm train` for this run again") from None
    if not rows:
        raise DataError(f"{path}: no rows; run `hrm train` for this run again")
    return rows


def draw_figures(group: str, name: str, seed: int, data: built.ImageData, result: dict) -> None:
    """The four per-run figures, from the training traces and this evaluation."""
    out = paths.figure_files(group, name, seed)
    title = f"{name} seed {seed}"
    steps = _read_csv(paths.steps_file(group, name, seed), {"step": int, "loss": float})
    figures.loss_trace(np.array([r["step"] for r in steps]), np.array([r["loss"] for r in steps]),
                       title, out["loss"])
    history = _read_csv(paths.history_file(group, name, seed), {"epoch": int, "train_acc": float, "test_acc": float})
    figures.accuracy_curves(history, title, out["accuracy"])
    figures.confusion_matrix(np.array(result["confusion"]), result["label_names"], title, out["confusion"])
    wrong = result["misclassified"]
    images = np.asarray(data.test_x[[w["index"] for w in wrong]]) if wrong else np.zeros((0, 1, 1, 1), np.uint8)
    figures.error_grid(images, [w["true"] for w in wrong], [w["pred"] for w in wrong], result["label_names"],
                       title, out["errors"])
